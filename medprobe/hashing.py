"""File digests, one policy per purpose (the only place medprobe hashes files).

- :func:`file_sha256`: every byte of a file (config files, case files, small weights).
- :func:`weights_digest`: a weights file for a cache key; files above 1 GiB are identified by
  size + the first and last 64 MiB (a full hash of 80B-parameter shards would take minutes).
- :func:`image_digest`: an image for a cache key, memoised per process by
  (path, size, mtime, ctime, inode), so the jobs of one multirun read each file once;
  ``"missing"`` / ``"unreadable"`` markers instead of errors (the image scan reports those).
- :func:`stat_digest`: size + mtime only (``data.fingerprint=stat``: instant, trusts metadata).
- :func:`bytes_digest`: an image held in memory (a dataset row's encoded bytes): the same hex
  sha256 that :func:`image_digest` gives a file with those bytes.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

CHUNK = 1 << 20
#: weights files above this size are digested by head and tail only (:func:`weights_digest`)
FULL_HASH_LIMIT = 1 << 30
PARTIAL_CHUNK = 64 << 20

_IMAGE_DIGESTS: dict[tuple[str, int, int, int, int], str] = {}


def file_sha256(path: str | os.PathLike[str], chunk: int = CHUNK) -> str:
    """Hex sha256 of every byte of ``path``, read in ``chunk``-byte blocks.

    Raises:
        OSError: the file cannot be read.
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def weights_digest(path: str | os.PathLike[str]) -> str:
    """``sha256:<hex>`` of a weights file; above 1 GiB ``sha256-head-tail:<size>:<hex>``
    (sha256 of the first and last 64 MiB).

    Raises:
        OSError: the file cannot be read.
    """
    p = Path(path)
    size = p.stat().st_size
    if size <= FULL_HASH_LIMIT:
        return "sha256:" + file_sha256(p)
    h = hashlib.sha256()
    with open(p, "rb") as f:
        h.update(f.read(PARTIAL_CHUNK))
        f.seek(max(0, size - PARTIAL_CHUNK))
        h.update(f.read(PARTIAL_CHUNK))
    return f"sha256-head-tail:{size}:{h.hexdigest()}"


def stat_digest(path: str | os.PathLike[str]) -> str:
    """``<size>:<mtime ns>`` of a file, or ``"missing"``."""
    try:
        st = os.stat(path)
    except OSError:
        return "missing"
    return f"{st.st_size}:{st.st_mtime_ns}"


def image_digest(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of an image file's bytes, memoised within the process.

    The memo key is (path, size, mtime, ctime, inode): ctime is set by the kernel on every
    write or metadata change and cannot be restored by ``cp -p`` / ``touch -d``, so a rewritten
    file is hashed again. Returns ``"missing"`` or ``"unreadable"`` instead of raising.
    """
    try:
        st = os.stat(path)
    except OSError:
        return "missing"
    memo = (str(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    if memo not in _IMAGE_DIGESTS:
        try:
            digest = file_sha256(path)
        except OSError:
            return "unreadable"
        _IMAGE_DIGESTS[memo] = digest
    return _IMAGE_DIGESTS[memo]


def bytes_digest(data: bytes) -> str:
    """Hex sha256 of an encoded image held in memory (equal to :func:`image_digest` of a file
    holding the same bytes, so one image has one digest wherever it is stored)."""
    return hashlib.sha256(data).hexdigest()
