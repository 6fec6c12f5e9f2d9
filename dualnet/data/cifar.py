"""CIFAR-10 and CIFAR-100 from the official "python version" pickle batches.

The files (https://www.cs.toronto.edu/~kriz/cifar.html) are Python 2 pickles of dicts:

- CIFAR-10 `data_batch_1..5`, `test_batch`: `b'data'` uint8 (10000, 3072) with each row a
  3x32x32 image in channel-major order, `b'labels'` a list of ints in [0, 10);
  `batches.meta`: `b'label_names'`.
- CIFAR-100 `train` (50000 rows), `test` (10000 rows): `b'data'`, `b'fine_labels'` in
  [0, 100), `b'coarse_labels'` in [0, 20) (the superclasses); `meta`: `b'fine_label_names'`,
  `b'coarse_label_names'`.

CIFAR-100 also comes as MATLAB files (`cifar-100-matlab`, as some courses distribute it):
`train.mat`, `test.mat` with the same `data` rows and (N, 1) `fine_labels`, `coarse_labels`
columns, and `meta.mat` with the label names as cell arrays. The CIFAR-100 functions read a
folder of either version and return the same arrays; scipy.io reads the MATLAB files.

Pickles can run code when loaded, so batches are read with an unpickler that only builds
dicts, lists, strings, numbers and NumPy arrays (`_read_pickle`); the downloader also checks
the archive's published checksum before extracting it (`dualnet.data.download`).

`load_CIFAR10` keeps the course's (N, 32, 32, 3) layout (handy for plotting); the
`get_*_data` functions return the course's dict of (N, 3, 32, 32) arrays ready for a model.
"""

from __future__ import annotations

import codecs
import os
import pickle

import numpy as np

from . import download

__all__ = [
    "load_CIFAR_batch", "load_CIFAR10", "load_CIFAR100", "cifar10_label_names",
    "cifar100_label_names", "get_CIFAR10_data", "get_CIFAR100_data",
]

_IMAGE_SHAPE = (3, 32, 32)


def _numpy_globals() -> dict:
    """The only classes/functions a CIFAR pickle may name, keyed by (module, name).

    The official files were written by NumPy 1 (`numpy.core...`); NumPy 2 writes
    `numpy._core...`. Both names map to the running NumPy's objects.
    """
    reconstruct = np.zeros(1).__reduce__()[0]  # the functions NumPy's own pickles name
    scalar = np.float64(0).__reduce__()[0]
    frombuffer = np.zeros(1).__reduce_ex__(5)[0]  # protocol-5 pickles
    allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
               # Python 3 protocol-2 pickles spell bytes as _codecs.encode(str, 'latin1')
               ("_codecs", "encode"): codecs.encode}
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{core}.multiarray", "scalar")] = scalar
        allowed[(f"{core}.numeric", "_frombuffer")] = frombuffer
    return allowed


class _DataOnlyUnpickler(pickle.Unpickler):
    """Refuses every global except the NumPy array constructors in `_numpy_globals`."""

    _allowed = None

    def find_class(self, module, name):
        if _DataOnlyUnpickler._allowed is None:
            _DataOnlyUnpickler._allowed = _numpy_globals()
        try:
            return _DataOnlyUnpickler._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: a CIFAR batch holds only arrays, lists "
                "and strings") from None


def _read_pickle(path) -> dict:
    """The dict in pickle file `path`, keys as `str` whatever Python wrote it.

    `encoding='latin1'` is what NumPy asks for with Python 2 pickles: Python 2 `str`
    (keys, names, raw array bytes) arrive as `str` and arrays decode byte-exact.
    """
    try:
        with open(path, "rb") as f:
            obj = _DataOnlyUnpickler(f, encoding="latin1").load()
    except FileNotFoundError:
        raise FileNotFoundError(f"CIFAR file {path} is missing") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
        raise ValueError(f"{path} is not a CIFAR python batch: {exc}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path} is not a CIFAR python batch: holds {type(obj).__name__}")
    return {_text(k): v for k, v in obj.items()}


def _text(s) -> str:
    return s.decode("latin1") if isinstance(s, bytes) else s


def _read_mat(path) -> dict:
    """The variables in MATLAB file `path`, with (N, 1) columns flattened to (N,) like the
    pickles' lists. scipy.io builds arrays only: nothing in the file runs."""
    # imported on use: importing scipy.io takes most of a second, and only this format needs it
    from scipy.io import loadmat, matlab

    try:
        variables = loadmat(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"CIFAR file {path} is missing") from None
    except NotImplementedError:  # scipy's answer to the HDF5-based v7.3 format
        raise ValueError(f"{path} is a MATLAB v7.3 file, which scipy.io cannot read; save it "
                         "again with MATLAB's save(..., '-v7')") from None
    except (ValueError, TypeError, matlab.MatReadError) as exc:
        raise ValueError(f"{path} is not a CIFAR MATLAB file: {exc}") from None
    return {name: value.ravel() if value.ndim == 2 and value.shape[1] == 1 else value
            for name, value in variables.items() if not name.startswith("__")}


def _is_matlab_version(ROOT) -> bool:
    """Whether folder ROOT holds CIFAR-100's MATLAB version (train.mat and no pickled train)."""
    return (os.path.isfile(os.path.join(ROOT, "train.mat"))
            and not os.path.isfile(os.path.join(ROOT, "train")))


def _cifar100_file(ROOT, name) -> tuple[dict, str]:
    """CIFAR-100 file `name` ('train', 'test' or 'meta') of folder ROOT as a dict, and its
    path: the pickle `ROOT/name`, or `ROOT/name.mat` in a folder of the MATLAB version."""
    if _is_matlab_version(ROOT):
        path = os.path.join(ROOT, f"{name}.mat")
        return _read_mat(path), path
    path = os.path.join(ROOT, name)
    return _read_pickle(path), path


def _name(value) -> str:
    """One class name: bytes or str from a pickle; from a MATLAB file, a cell's char array
    or a row of a char matrix (blank-padded to the longest name)."""
    if isinstance(value, np.ndarray):
        return "".join(value.ravel().tolist())
    if isinstance(value, np.str_):
        return str(value).rstrip()
    return _text(value)


def _images(batch: dict, path) -> np.ndarray:
    """`batch['data']` as uint8 (N, 3, 32, 32), checked."""
    data = np.asarray(batch.get("data"))
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != np.prod(_IMAGE_SHAPE):
        raise ValueError(f"{path}: 'data' must be uint8 (N, 3072), got {data.dtype} "
                         f"{data.shape}")
    return data.reshape((-1, *_IMAGE_SHAPE))


def _labels(batch: dict, key: str, n: int, num_classes: int, path) -> np.ndarray:
    """`batch[key]` as int64 (n,), checked against `num_classes`."""
    if key not in batch:
        raise ValueError(f"{path}: no {key!r} entry (keys: {', '.join(sorted(batch))})")
    y = np.asarray(batch[key], dtype=np.int64)
    if y.shape != (n,) or (n and (y.min() < 0 or y.max() >= num_classes)):
        raise ValueError(f"{path}: {key!r} must be {n} ints in [0, {num_classes})")
    return y


def _as_nhwc(x_nchw: np.ndarray, dtype) -> np.ndarray:
    return x_nchw.transpose(0, 2, 3, 1).astype(dtype)


def load_CIFAR_batch(filename, dtype=np.float32):
    """One CIFAR-10 batch file: X (N, 32, 32, 3) `dtype` in [0, 255], y int64 (N,)."""
    batch = _read_pickle(filename)
    x = _images(batch, filename)
    return _as_nhwc(x, dtype), _labels(batch, "labels", len(x), 10, filename)


def load_CIFAR10(ROOT, dtype=np.float32):
    """The whole of CIFAR-10 from folder `ROOT` (`cifar-10-batches-py`).

    Returns Xtr (50000, 32, 32, 3), Ytr (50000,), Xte (10000, 32, 32, 3), Yte (10000,):
    pixel values in [0, 255] as `dtype` (the course used float64; float32 halves the
    memory), labels int64.
    """
    parts = [load_CIFAR_batch(os.path.join(ROOT, f"data_batch_{b}"), dtype)
             for b in range(1, 6)]
    Xtr = np.concatenate([x for x, _ in parts])
    Ytr = np.concatenate([y for _, y in parts])
    Xte, Yte = load_CIFAR_batch(os.path.join(ROOT, "test_batch"), dtype)
    return Xtr, Ytr, Xte, Yte


def load_CIFAR100(ROOT, label_mode="fine", dtype=np.float32):
    """CIFAR-100 from folder `ROOT`: the pickled version (`cifar-100-python`: train, test,
    meta) or the MATLAB version (`cifar-100-matlab`: train.mat, test.mat, meta.mat), which
    give the same arrays.

    label_mode: 'fine' (100 classes), 'coarse' (the 20 superclasses) or 'both'.
    Returns Xtr (50000, 32, 32, 3), Ytr, Xte (10000, 32, 32, 3), Yte as `load_CIFAR10`;
    with 'both', Ytr and Yte are (fine, coarse) pairs of int64 arrays.
    """
    keys = {"fine": [("fine_labels", 100)], "coarse": [("coarse_labels", 20)],
            "both": [("fine_labels", 100), ("coarse_labels", 20)]}
    if label_mode not in keys:
        raise ValueError(f"load_CIFAR100: label_mode must be 'fine', 'coarse' or 'both', "
                         f"got {label_mode!r}")
    out = []
    for split in ("train", "test"):
        batch, path = _cifar100_file(ROOT, split)
        x = _images(batch, path)
        ys = [_labels(batch, key, len(x), k, path) for key, k in keys[label_mode]]
        out += [_as_nhwc(x, dtype), tuple(ys) if label_mode == "both" else ys[0]]
    return tuple(out)


def cifar10_label_names(ROOT) -> list[str]:
    """The 10 class names from `ROOT/batches.meta` ('airplane', 'automobile', ...)."""
    return [_name(s) for s in _read_pickle(os.path.join(ROOT, "batches.meta"))["label_names"]]


def cifar100_label_names(ROOT, label_mode="fine") -> list[str]:
    """The 100 fine or 20 coarse class names from `ROOT/meta` (or `ROOT/meta.mat`)."""
    meta, path = _cifar100_file(ROOT, "meta")
    key = f"{label_mode}_label_names"
    if key not in meta:
        raise ValueError(f"{path}: no {key!r} entry (keys: {', '.join(sorted(meta))})")
    return [_name(value) for value in meta[key]]


def _course_dict(Xtr, ytr, Xte, yte, num_training, num_validation, num_test, subtract_mean,
                 class_names) -> dict:
    """The course split: val = the `num_validation` train images after the first
    `num_training`, test = the first `num_test` test images; NHWC -> NCHW; mean image of
    the training split subtracted from all three when `subtract_mean`."""
    if num_training + num_validation > len(Xtr) or num_test > len(Xte):
        raise ValueError(f"asked for {num_training}+{num_validation} train/val and {num_test} "
                         f"test images, the files hold {len(Xtr)} and {len(Xte)}")
    X_val = Xtr[num_training:num_training + num_validation]
    y_val = ytr[num_training:num_training + num_validation]
    X_train, y_train = Xtr[:num_training], ytr[:num_training]
    X_test, y_test = Xte[:num_test], yte[:num_test]
    if subtract_mean:
        mean_image = X_train.mean(axis=0)
        X_train, X_val, X_test = X_train - mean_image, X_val - mean_image, X_test - mean_image

    def nchw(x):
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))

    return {"X_train": nchw(X_train), "y_train": y_train, "X_val": nchw(X_val),
            "y_val": y_val, "X_test": nchw(X_test), "y_test": y_test,
            "class_names": class_names}


def get_CIFAR10_data(num_training=49000, num_validation=1000, num_test=1000,
                     subtract_mean=True, root=None, dtype=np.float32, fetch=True):
    """CIFAR-10 as the course's dict, ready for `Solver`.

    Keys: X_train (num_training, 3, 32, 32), y_train (num_training,), X_val, y_val,
    X_test, y_test (arrays `dtype` / int64), plus `class_names` (10 str).
    root: folder holding `cifar-10-batches-py`; default `download.cache_dir()`.
    fetch: download (checksum-verified) when the batches are not there yet.
    """
    folder = download.locate("cifar-10", root, fetch=fetch)
    Xtr, ytr, Xte, yte = load_CIFAR10(folder, dtype)
    return _course_dict(Xtr, ytr, Xte, yte, num_training, num_validation, num_test,
                        subtract_mean, cifar10_label_names(folder))


def get_CIFAR100_data(num_training=49000, num_validation=1000, num_test=1000,
                      subtract_mean=True, label_mode="fine", root=None, dtype=np.float32,
                      fetch=True):
    """CIFAR-100 as the course's dict (see `get_CIFAR10_data`), with `label_mode` 'fine'
    (100 classes) or 'coarse' (20 superclasses) labels and matching `class_names`.

    The MATLAB version is used when `download.cache_dir(root)` (`root` itself when given),
    or its `cifar-100-matlab/` folder, holds train.mat; else the pickled version is found
    or fetched as for CIFAR-10.
    """
    if label_mode not in ("fine", "coarse"):
        raise ValueError(f"get_CIFAR100_data: label_mode must be 'fine' or 'coarse', "
                         f"got {label_mode!r}")
    base = download.cache_dir(root)
    matlab = [f for f in (base, base / "cifar-100-matlab") if _is_matlab_version(f)]
    try:
        folder = matlab[0] if matlab else download.locate("cifar-100", root, fetch=fetch)
    except download.DatasetNotFound as exc:
        raise download.DatasetNotFound(f"{exc}; or put the MATLAB version's train.mat, "
                                       f"test.mat and meta.mat in {base}") from None
    Xtr, ytr, Xte, yte = load_CIFAR100(folder, label_mode, dtype)
    return _course_dict(Xtr, ytr, Xte, yte, num_training, num_validation, num_test,
                        subtract_mean, cifar100_label_names(folder, label_mode))
