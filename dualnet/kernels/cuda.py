"""Placeholder until the GPU issue lands: the backend is reported unavailable with the reason."""

from ..backend import BackendUnavailable


def make_cupy_backend(base):
    raise BackendUnavailable("not implemented yet (GPU backend issue #4)")
