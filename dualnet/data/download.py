"""Fetch the CIFAR archives: HTTPS, resumable, checksum-verified, safely extracted.

The cache directory is, first that applies: the `root` argument, `$DUALNET_DATA`,
`$XDG_CACHE_HOME/dualnet`, `~/.cache/dualnet`. Any writable folder works, a mounted drive
included (downloads go to `<name>.part` beside the target and are renamed when complete).

Nothing in an archive is opened before its MD5 matches the published one: the CIFAR batches
are pickles. Extraction refuses links, devices and paths that leave the target folder.
Offline, the error says which file to put where by hand.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

__all__ = [
    "Archive", "ARCHIVES", "DownloadError", "ChecksumError", "UnsafeArchiveError",
    "DatasetNotFound", "cache_dir", "download_file", "md5sum", "extract_tar", "locate",
]


@dataclass(frozen=True)
class Archive:
    """A published dataset tarball and the folder it extracts to."""

    url: str
    md5: str
    folder: str          # top-level folder inside the tarball
    files: tuple         # files that must exist in `folder` for it to count as complete

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


ARCHIVES = {
    "cifar-10": Archive(
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "c58f30108f718f92721af3b95e74349a", "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta")),
    "cifar-100": Archive(
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "eb9058c3a382ffc7106e4002c42a8d85", "cifar-100-python", ("train", "test", "meta")),
}


class DownloadError(RuntimeError):
    """A download failed for good (after retries); the message says what to do by hand."""


class ChecksumError(DownloadError):
    """A file's MD5 differs from the published one; the file was deleted unopened."""


class UnsafeArchiveError(DownloadError):
    """An archive holds a link, a device or a path that escapes the extraction folder."""


class DatasetNotFound(FileNotFoundError):
    """The dataset is not on disk and fetching was not allowed."""


def cache_dir(root=None) -> Path:
    """Where datasets live: `root`, else $DUALNET_DATA, $XDG_CACHE_HOME/dualnet,
    ~/.cache/dualnet."""
    if root is not None:
        return Path(root).expanduser()
    if os.environ.get("DUALNET_DATA"):
        return Path(os.environ["DUALNET_DATA"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg) / "dualnet"


def md5sum(path, chunk=1 << 20) -> str:
    """Hex MD5 of the file at `path`."""
    h = hashlib.md5(usedforsecurity=False)  # an integrity check, not security
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify(path, md5: str) -> None:
    """Raise `ChecksumError` (after deleting `path`) unless its MD5 is `md5`."""
    got = md5sum(path)
    if got != md5:
        Path(path).unlink()
        raise ChecksumError(f"{path} has MD5 {got}, expected {md5}: the download is corrupt "
                            "or not the official file; it was deleted without being opened")


class _Truncated(OSError):
    """The server closed the connection before sending the announced length."""


def _fetch_into(url: str, part: Path, timeout: float, progress: bool) -> None:
    """Download `url` into `part`, continuing after its current size when the server
    honours HTTP Range (status 206); from scratch otherwise."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=timeout) as resp:
        if offset and getattr(resp, "status", None) != 206:
            offset = 0  # Range ignored (or a file:// URL): the body is the whole file
        length = resp.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        with open(part, "ab" if offset else "wb") as f, \
                tqdm(total=total, initial=offset, unit="B", unit_scale=True,
                     desc=part.name[:-len(".part")], disable=not progress, leave=False) as bar:
            while chunk := resp.read(1 << 16):
                f.write(chunk)
                bar.update(len(chunk))
    size = part.stat().st_size
    if total is not None and size < total:
        raise _Truncated(f"connection closed after {size} of {total} bytes")


def download_file(url: str, dest, md5: str | None = None, retries: int = 4,
                  timeout: float = 30.0, backoff: float = 1.0, progress: bool = True) -> Path:
    """Download `url` to `dest`, resuming and retrying, and check its MD5.

    Each failed attempt (connection error, timeout, truncated body) is retried after
    `backoff * 2**k` seconds, continuing from the bytes already received. HTTP errors
    such as 404 are not retried. Returns `dest`; raises `DownloadError` or `ChecksumError`.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    for attempt in range(retries):
        try:
            _fetch_into(url, part, timeout, progress)
            break
        except urllib.error.HTTPError as exc:
            if exc.code != 416:  # 416: a stale .part longer than the file; start over
                raise DownloadError(f"could not download {url}: HTTP {exc.code} "
                                    f"{exc.reason}") from None
            part.unlink()
            reason = exc
        except (OSError, http.client.HTTPException) as exc:  # URLError is an OSError
            reason = exc
        if attempt + 1 < retries:
            time.sleep(backoff * 2 ** attempt)
    else:
        raise DownloadError(f"could not download {url} after {retries} attempts: "
                            f"{getattr(reason, 'reason', reason)}")
    if md5 is not None:
        verify(part, md5)
    os.replace(part, dest)
    return dest


def extract_tar(archive, target) -> None:
    """Extract regular files and folders of tarball `archive` into folder `target`.

    Every member is checked before anything is written: links, devices and names that
    resolve outside `target` raise `UnsafeArchiveError`. Files land in a temporary folder
    inside `target` first and are moved in place at the end, so an interrupted extraction
    never leaves a half-written dataset that looks complete.
    """
    target = Path(target).resolve()
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "r:*") as tar:
        members = tar.getmembers()
        for m in members:
            if not (m.isfile() or m.isdir()):
                raise UnsafeArchiveError(f"{archive}: refusing {m.name!r}, which is not a "
                                         "regular file or folder")
            if not (target / m.name).resolve().is_relative_to(target):
                raise UnsafeArchiveError(f"{archive}: refusing {m.name!r}, which would be "
                                         f"written outside {target}")
        staging = Path(tempfile.mkdtemp(dir=target, prefix=".extract-"))
        try:
            for m in members:
                out = staging / m.name
                if m.isdir():
                    out.mkdir(parents=True, exist_ok=True)
                    continue
                out.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(m) as src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst)
            for top in staging.iterdir():
                final = target / top.name
                if final.is_dir():
                    shutil.rmtree(final)
                os.replace(top, final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _complete(folder: Path, archive: Archive) -> bool:
    return all((folder / f).is_file() for f in archive.files)


def locate(name: str, root=None, fetch: bool = True, url: str | None = None,
           progress: bool = True, **download_options) -> Path:
    """The folder holding dataset `name` ('cifar-10' or 'cifar-100'), fetching it if needed.

    Looks in `cache_dir(root)` for the extracted folder (or accepts `root` being that
    folder), then for the tarball placed there by hand, then downloads it (when `fetch`).
    The tarball is verified against the published MD5 before it is extracted.
    url: another address for the same tarball (a mirror); download_options go to
    `download_file`.
    """
    if name not in ARCHIVES:
        raise ValueError(f"locate: unknown dataset {name!r}; the known names are "
                         f"{', '.join(map(repr, ARCHIVES))}")
    archive = ARCHIVES[name]
    base = cache_dir(root)
    for folder in (base / archive.folder, base):
        if _complete(folder, archive):
            return folder
    tarball = base / archive.filename
    if not tarball.is_file():
        if not fetch:
            raise DatasetNotFound(f"{name} is not in {base}; {_by_hand(archive, base)}")
        try:
            download_file(url or archive.url, tarball, archive.md5, progress=progress,
                          **download_options)
        except ChecksumError:
            raise
        except DownloadError as exc:
            raise DownloadError(f"{exc}. {_by_hand(archive, base)}") from None
    else:
        verify(tarball, archive.md5)
    extract_tar(tarball, base)
    if not _complete(base / archive.folder, archive):
        raise DownloadError(f"{tarball} did not contain {archive.folder}/ with "
                            f"{', '.join(archive.files)}")
    return base / archive.folder


def _by_hand(archive: Archive, base: Path) -> str:
    return (f"to install it by hand, download {archive.url} (MD5 {archive.md5}) and put "
            f"{archive.filename} (or its extracted folder {archive.folder}/) in {base}; set "
            "DUALNET_DATA or pass root= to use another folder")
