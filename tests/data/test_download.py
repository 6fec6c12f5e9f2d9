"""The downloader, against file:// URLs and a local HTTP server: never the network."""

import hashlib
import io
import socket
import tarfile

import numpy as np
import pytest

from dualnet.data import download
from dualnet.data.cifar import load_CIFAR10
from dualnet.data.download import (
    Archive,
    ChecksumError,
    DownloadError,
    UnsafeArchiveError,
    cache_dir,
    download_file,
    extract_tar,
    locate,
)


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


@pytest.fixture
def tiny_cifar10(monkeypatch, cifar10_tarball):
    """Point the 'cifar-10' entry at the tiny tarball's MD5 (same folder and files)."""
    path, data = cifar10_tarball
    real = download.ARCHIVES["cifar-10"]
    monkeypatch.setitem(download.ARCHIVES, "cifar-10",
                        Archive(real.url, md5(data), real.folder, real.files))
    return path, data


def test_published_checksums_are_the_official_ones():
    assert download.ARCHIVES["cifar-10"].md5 == "c58f30108f718f92721af3b95e74349a"
    assert download.ARCHIVES["cifar-100"].md5 == "eb9058c3a382ffc7106e4002c42a8d85"
    assert all(a.url.startswith("https://") for a in download.ARCHIVES.values())


def test_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("DUALNET_DATA", str(tmp_path / "env"))
    assert cache_dir() == tmp_path / "env"
    assert cache_dir(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("DUALNET_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "dualnet"


def test_locate_downloads_verifies_and_extracts_from_file_url(tmp_path, tiny_cifar10):
    path, _ = tiny_cifar10
    root = tmp_path / "cache"
    folder = locate("cifar-10", root, url=path.as_uri(), progress=False)
    assert folder == root / "cifar-10-batches-py"
    Xtr, ytr, Xte, yte = load_CIFAR10(folder)
    assert Xtr.shape == (20, 32, 32, 3) and Xte.shape == (3, 32, 32, 3)
    assert not list(root.glob("*.part")) and not list(root.glob(".extract-*"))
    # second call finds the extracted folder and does not download again
    assert locate("cifar-10", root, url="file:///nonexistent/x.tar.gz") == folder


def test_download_resumes_after_truncated_response(tmp_path, http_server):
    payload = np.random.RandomState(0).bytes(300_000)
    srv = http_server(payload, truncate=1)
    dest = download_file(srv.url, tmp_path / "f.tar.gz", md5(payload), backoff=0,
                         progress=False)
    assert dest.read_bytes() == payload
    assert srv.requests == [None, f"bytes={len(payload) // 2}-"]


def test_download_resumes_a_part_file_left_by_an_earlier_run(tmp_path, http_server):
    payload = np.random.RandomState(1).bytes(100_000)
    (tmp_path / "f.tar.gz.part").write_bytes(payload[:40_000])
    srv = http_server(payload)
    download_file(srv.url, tmp_path / "f.tar.gz", md5(payload), progress=False)
    assert (tmp_path / "f.tar.gz").read_bytes() == payload
    assert srv.requests == ["bytes=40000-"]


def test_download_gives_up_after_retries(tmp_path, http_server):
    srv = http_server(b"x" * 10_000, truncate=100)
    with pytest.raises(DownloadError, match="after 3 attempts"):
        download_file(srv.url, tmp_path / "f", retries=3, backoff=0, progress=False)
    assert len(srv.requests) == 3
    assert not (tmp_path / "f").exists()


def test_http_error_is_not_retried(tmp_path, http_server):
    srv = http_server(b"", status=404)
    with pytest.raises(DownloadError, match="HTTP 404"):
        download_file(srv.url, tmp_path / "f", backoff=0, progress=False)
    assert len(srv.requests) == 1


def test_checksum_mismatch_deletes_the_file_unopened(tmp_path, http_server):
    srv = http_server(b"not the official tarball")
    with pytest.raises(ChecksumError, match="expected 0{32}"):
        download_file(srv.url, tmp_path / "f.tar.gz", "0" * 32, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_locate_refuses_a_tarball_with_the_wrong_checksum(tmp_path, cifar10_tarball):
    # the real published MD5 cannot match the tiny tarball: nothing may be extracted
    path, data = cifar10_tarball
    root = tmp_path / "cache"
    root.mkdir()
    (root / "cifar-10-python.tar.gz").write_bytes(data)
    with pytest.raises(ChecksumError, match="c58f30108f718f92721af3b95e74349a"):
        locate("cifar-10", root)
    assert list(root.iterdir()) == []


def test_locate_uses_a_tarball_put_there_by_hand(tmp_path, tiny_cifar10):
    _, data = tiny_cifar10
    root = tmp_path / "cache"
    root.mkdir()
    (root / "cifar-10-python.tar.gz").write_bytes(data)
    folder = locate("cifar-10", root, fetch=False)
    assert (folder / "data_batch_5").is_file()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_offline_error_says_where_to_put_the_files(tmp_path):
    root = tmp_path / "cache"
    url = f"http://127.0.0.1:{_closed_port()}/cifar-10-python.tar.gz"
    with pytest.raises(DownloadError) as info:
        locate("cifar-10", root, url=url, retries=2, backoff=0, timeout=2, progress=False)
    msg = str(info.value)
    assert "by hand" in msg and str(root) in msg
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in msg
    assert "cifar-10-batches-py" in msg


def _tarball(path, members):
    """Write a tar.gz with `members`: (TarInfo, bytes or None)."""
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)


def _file(name, data=b"x"):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


@pytest.mark.parametrize("name", ["../escaped", "ABSOLUTE", "ok/../../escaped"])
def test_extract_refuses_paths_outside_the_target(tmp_path, name):
    # each name points at tmp_path/escaped, beside the target folder
    name = str(tmp_path / "escaped") if name == "ABSOLUTE" else name
    _tarball(tmp_path / "bad.tar.gz", [_file("ok/fine"), _file(name)])
    target = tmp_path / "target"
    with pytest.raises(UnsafeArchiveError, match="outside"):
        extract_tar(tmp_path / "bad.tar.gz", target)
    assert not (tmp_path / "escaped").exists()
    assert list(target.iterdir()) == []


def test_extract_refuses_links(tmp_path):
    link = tarfile.TarInfo("folder/passwd")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    _tarball(tmp_path / "bad.tar.gz", [(link, None)])
    with pytest.raises(UnsafeArchiveError, match="not a regular file"):
        extract_tar(tmp_path / "bad.tar.gz", tmp_path / "target")


def test_extract_writes_nested_files(tmp_path):
    _tarball(tmp_path / "ok.tar.gz", [_file("a/b/c.bin", b"hello"), _file("a/d", b"")])
    extract_tar(tmp_path / "ok.tar.gz", tmp_path / "t")
    assert (tmp_path / "t" / "a" / "b" / "c.bin").read_bytes() == b"hello"
    assert (tmp_path / "t" / "a" / "d").read_bytes() == b""
