"""Fixtures for the data tests: tiny CIFAR folders in the official pickle format, and a
local HTTP server (127.0.0.1, random port, stopped after the test) for the downloader."""

from __future__ import annotations

import http.server
import io
import pickle
import struct
import tarfile
import threading
import types

import numpy as np
import pytest


class Py2Pickler(pickle._Pickler):
    """Pickles `bytes` as Python 2 `str` (SHORT_BINSTRING/BINSTRING), as the official
    CIFAR files, written by Python 2, do: keys, names and the raw array data."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_bytes(self, obj):
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_bytes


def write_batch(path, batch: dict, style: str = "py2"):
    """Write `batch` (bytes keys, like the official dicts) as a pickle.

    style: 'py2' (Python 2 strings, the official files), 'py3-protocol2' (Python 3
    writing protocol 2), 'py3' (Python 3's default protocol).
    """
    if style == "py2":
        buf = io.BytesIO()
        Py2Pickler(buf, protocol=2).dump(batch)
        # NumPy 1 wrote its array constructor as numpy.core.multiarray._reconstruct
        data = buf.getvalue().replace(b"cnumpy._core.", b"cnumpy.core.")
    else:
        data = pickle.dumps(batch, protocol=2 if style == "py3-protocol2" else None)
    with open(path, "wb") as f:
        f.write(data)


def image_rows(n, seed):
    """n random CIFAR rows: uint8 (n, 3072), each 1024 R, then 1024 G, then 1024 B values."""
    return np.random.RandomState(seed).randint(0, 256, size=(n, 3072), dtype=np.uint8)


CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                 "ship", "truck"]


def make_cifar10(folder, per_batch=4, n_test=3, style="py2"):
    """A CIFAR-10 folder of 5 train batches of `per_batch` images and a test batch.
    Returns the rows and labels written: (train_rows, train_labels, test_rows, test_labels)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows, labels = [], []
    for b in range(1, 6):
        r = image_rows(per_batch, seed=b)
        y = [(b * 3 + i) % 10 for i in range(per_batch)]
        write_batch(folder / f"data_batch_{b}", {
            b"batch_label": f"training batch {b} of 5".encode(), b"labels": y, b"data": r,
            b"filenames": [f"img_{b}_{i}.png".encode() for i in range(per_batch)]}, style)
        rows.append(r)
        labels += y
    test_rows = image_rows(n_test, seed=99)
    test_labels = [9 - i for i in range(n_test)]
    write_batch(folder / "test_batch", {b"batch_label": b"testing batch 1 of 1",
                                        b"labels": test_labels, b"data": test_rows,
                                        b"filenames": [b"t.png"] * n_test}, style)
    write_batch(folder / "batches.meta", {
        b"label_names": [s.encode() for s in CIFAR10_NAMES], b"num_cases_per_batch": 10000,
        b"num_vis": 3072}, style)
    return np.concatenate(rows), np.array(labels), test_rows, np.array(test_labels)


def cifar100_splits(n_train, n_test):
    """The images and labels the CIFAR-100 writers below put in their files:
    {split: (rows, fine, coarse)}."""
    written = {}
    for split, n, seed in (("train", n_train, 1), ("test", n_test, 2)):
        fine = np.array([(7 * i + seed) % 100 for i in range(n)])
        written[split] = (image_rows(n, seed), fine, fine % 20)
    return written


def make_cifar100(folder, n_train=6, n_test=2, style="py2"):
    """A CIFAR-100 folder (train, test, meta). Returns {split: (rows, fine, coarse)}."""
    folder.mkdir(parents=True, exist_ok=True)
    written = cifar100_splits(n_train, n_test)
    for split, (r, fine, coarse) in written.items():
        write_batch(folder / split, {b"filenames": [b"x.png"] * len(r), b"batch_label": b"x",
                                     b"fine_labels": fine.tolist(),
                                     b"coarse_labels": coarse.tolist(), b"data": r}, style)
    write_batch(folder / "meta", {
        b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
        b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)]}, style)
    return written


def _mat_cells(strings):
    """A MATLAB cell array (K, 1) of char arrays, as savemat writes an object array."""
    cells = np.empty((len(strings), 1), dtype=object)
    cells[:, 0] = strings
    return cells


def make_cifar100_mat(folder, n_train=6, n_test=2, names="cells"):
    """The same CIFAR-100 data as `make_cifar100`, in the MATLAB version's files: train.mat
    and test.mat (data (N, 3072) uint8, fine_labels and coarse_labels (N, 1) uint8,
    filenames and batch_label as the official files have them), meta.mat with the label
    names as cell arrays (`names='cells'`, as in the official file) or blank-padded char
    matrices (`names='chars'`). Returns {split: (rows, fine, coarse)}."""
    from scipy.io import savemat

    folder.mkdir(parents=True, exist_ok=True)
    written = cifar100_splits(n_train, n_test)
    for split, (r, fine, coarse) in written.items():
        savemat(folder / f"{split}.mat", {
            "batch_label": "x", "data": r, "filenames": _mat_cells(["x.png"] * len(r)),
            "fine_labels": fine.astype(np.uint8).reshape(-1, 1),
            "coarse_labels": coarse.astype(np.uint8).reshape(-1, 1)})
    fine_names = [f"fine{i}" for i in range(100)]
    coarse_names = [f"coarse{i}" for i in range(20)]
    if names == "cells":
        fine_names, coarse_names = _mat_cells(fine_names), _mat_cells(coarse_names)
    else:
        fine_names, coarse_names = np.array(fine_names), np.array(coarse_names)
    savemat(folder / "meta.mat", {"fine_label_names": fine_names,
                                  "coarse_label_names": coarse_names})
    return written


@pytest.fixture
def cifar_files():
    """The writers above, for tests: `cifar_files.make_cifar10(folder, ...)`, `.make_cifar100`,
    `.make_cifar100_mat`, `.write_batch`, `.names` (the CIFAR-10 class names)."""
    return types.SimpleNamespace(make_cifar10=make_cifar10, make_cifar100=make_cifar100,
                                 make_cifar100_mat=make_cifar100_mat, write_batch=write_batch,
                                 names=CIFAR10_NAMES)


@pytest.fixture
def cifar10_tarball(tmp_path):
    """(path, bytes) of a gzipped tar holding a tiny `cifar-10-batches-py/`."""
    make_cifar10(tmp_path / "src" / "cifar-10-batches-py")
    path = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    return path, path.read_bytes()


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves `server.payload`; honours `Range: bytes=N-`; the first `server.truncate`
    responses announce the full length but stop halfway; `server.status` forces an error."""

    def do_GET(self):
        srv = self.server
        srv.requests.append(self.headers.get("Range"))
        if srv.status != 200:
            self.send_error(srv.status)
            return
        start, rng = 0, self.headers.get("Range")
        if rng:
            start = int(rng.removeprefix("bytes=").rstrip("-"))
            self.send_response(206)
            self.send_header("Content-Range",
                             f"bytes {start}-{len(srv.payload) - 1}/{len(srv.payload)}")
        else:
            self.send_response(200)
        body = srv.payload[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if srv.truncate > 0:
            srv.truncate -= 1
            body = body[:len(body) // 2]
        self.wfile.write(body)

    def log_message(self, *args):  # keep test output clean
        pass


@pytest.fixture
def http_server():
    """A function `start(payload, truncate=0, status=200) -> server` (with `.url` and
    `.requests`, the Range header of each request); every server is shut down after."""
    servers = []

    def start(payload: bytes, truncate: int = 0, status: int = 200):
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        srv.payload, srv.truncate, srv.status, srv.requests = payload, truncate, status, []
        srv.url = f"http://127.0.0.1:{srv.server_address[1]}/cifar-10-python.tar.gz"
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()
