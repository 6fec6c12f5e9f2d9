"""Backends: which array library holds the data and which kernels do the heavy work.

This module is the registry every other one asks; the backends themselves live in
`dualnet.backends` and register here when the package is imported. Layers, models, `optim`
and `Solver` ask the data::

    be = backend.of(x, w)   # the backend that owns these arrays
    xp = be.xp              # numpy or cupy
    out, ctx = be.conv2d(x, w, b, stride, pad)

Three backends fill one contract (`dualnet.backends.base.Backend`):

=========  ===================  ==================================================
name       arrays               kernels
=========  ===================  ==================================================
numpy      numpy.ndarray        Cython `kernels/{im2col,winograd}.pyx`, else NumPy
cupy       cupy.ndarray         `kernels/conv.cu` through CuPy (NVRTC)
cuda-emu   numpy.ndarray        the same `conv.cu` compiled for the CPU
=========  ===================  ==================================================

`numpy` and `cuda-emu` both hold host arrays, so for host arrays the *default* backend
(`use(...)`) decides which kernel set runs: that is an implementation variant, as in
Chainer, never a change of array library. Device arrays always belong to `cupy`.

This module imports nothing else from dualnet, so that anything may import it.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "BackendUnavailable", "register", "names", "of", "get", "use", "current", "available",
    "why_unavailable", "seed",
]


class BackendUnavailable(RuntimeError):
    """Raised by `get(name)` when a backend cannot run here; the message says why."""


_FACTORIES = {}
_instances: dict = {}
_failures: dict[str, str] = {}
_default = "numpy"


def register(name: str, factory) -> None:
    """Make backend `name` known; `factory()` builds it on first use or raises
    `BackendUnavailable` with the reason. `dualnet.backends` registers the three backends."""
    _FACTORIES[name] = factory


def names() -> list[str]:
    """Every backend dualnet knows, usable here or not."""
    return list(_FACTORIES)


def get(name: str):
    """The backend called `name` (a `dualnet.backends.base.Backend`); raises
    `BackendUnavailable` with the reason if it cannot run. A backend object is returned as is."""
    if not isinstance(name, str) and any(name is be for be in _instances.values()):
        return name
    if name not in _FACTORIES:
        raise ValueError(f"unknown backend {name!r}; known backends: {', '.join(_FACTORIES)}")
    if name in _instances:
        return _instances[name]
    if name in _failures:
        raise BackendUnavailable(f"backend {name!r} is unavailable: {_failures[name]}")
    try:
        be = _FACTORIES[name]()
    except BackendUnavailable as exc:
        _failures[name] = str(exc)
        raise BackendUnavailable(f"backend {name!r} is unavailable: {exc}") from exc
    _instances[name] = be
    return be


def why_unavailable(name: str) -> str | None:
    """None when backend `name` runs here, else the reason it does not."""
    try:
        get(name)
    except BackendUnavailable:
        return _failures[name]
    return None


def available() -> list[str]:
    """Names of the backends usable on this machine (`'numpy'` always comes first)."""
    return [n for n in _FACTORIES if why_unavailable(n) is None]


def current():
    """The default backend: where new parameters are created and batches are moved."""
    return get(_default)


class use:
    """Make `name` the default backend, for good or, as a context manager, for a block.

    >>> backend.use('cupy')                 # from now on
    >>> with backend.use('cuda-emu'): ...   # only inside the block
    """

    def __init__(self, name: str):
        global _default
        be = get(name)  # fail now, with the reason, rather than at first use
        self._previous = _default
        _default = be.name

    def __enter__(self):
        return current()

    def __exit__(self, *exc_info) -> None:
        global _default
        _default = self._previous


def _array_family(a) -> str | None:
    """'host' for numpy arrays/scalars, 'cupy' for CuPy arrays, None for non-arrays."""
    if isinstance(a, (np.ndarray, np.generic)):
        return "host"
    module = type(a).__module__
    if module.startswith("cupy"):
        return "cupy"
    return None


def of(*arrays):
    """The backend that owns `arrays` (None and Python scalars are ignored).

    Host arrays belong to the default backend when it is a host backend (`numpy` or
    `cuda-emu`), else to `numpy`; CuPy arrays belong to `cupy`. Arrays of two backends
    raise `TypeError` naming both: dualnet never copies between devices behind your back.
    """
    for a in arrays:
        if type(a) is not np.ndarray:
            break
    else:  # host arrays only, the common case: no family dict to build
        return _host_default()
    families = {}
    for a in arrays:
        fam = _array_family(a)
        if fam is not None:
            families.setdefault(fam, type(a).__module__ + "." + type(a).__name__)
    if len(families) > 1:
        found = " and ".join(f"{fam} ({kind})" for fam, kind in families.items())
        raise TypeError(f"arrays from two backends were mixed: {found}; move them to one "
                        "backend first with backend.get(name).asarray(...)")
    if families.get("cupy"):
        return get("cupy")
    return _host_default()


def _host_default():
    """The backend host arrays belong to: the default one when it is a host backend."""
    default = _instances.get(_default) or current()
    return default if default.host else get("numpy")


def seed(n: int) -> None:
    """Seed every usable backend's random state, so that a CPU run is exactly reproducible."""
    np.random.seed(n)
    for name in list(_instances):
        _instances[name].seed(n)
