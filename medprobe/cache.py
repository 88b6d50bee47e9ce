"""Content-addressed, streamed, resumable feature cache (DESIGN.md, "Data flow").

One cache entry holds the pooled hidden states of every requested layer for one dataset
manifest, produced by one extractor configuration. The entry's key is the sha256 of a
canonical JSON *spec* that the runner fills with everything that changes the features
(model id + revision or weights hash, dtype, quantisation, pooling, layers, rendered prompt,
preprocessing, dataset manifest ids/hash, extractor code version); see :func:`cache_key`.

On-disk layout under ``root``::

    root/
      <key>.lock                 filelock guarding writes of <key> (FeatureCache.lock)
      .partial-<key>/            an entry being written (CacheWriter); resumable
        progress.json            {"done": [[start, stop], ...], "n_done", "ids_sha256", ...},
                                 replaced atomically
        done-<k>.json            rows written by shard writer k (data-parallel extraction)
        layer_XXX.npy            preallocated (n_total, D) float16, filled row block by block
      <key>/                     a complete entry (the partial dir renamed atomically)
        layer_001.npy ...        one (N, D) float16 .npy per layer, named by layer_filename
        ids.txt                  N example ids, one per line, row order of the arrays
        digests.txt              N image digests, one per line (when the writer was given
                                 them): what :meth:`CacheWriter.copy_rows` reuses rows by
        meta.json                written last: its presence means the entry is complete; holds
                                 a checksum of every layer file and of ids.txt ("checksums")
      <key>.corrupt-<time>/      an entry whose files no longer match their checksums, set
                                 aside (renamed, never deleted) by the first reader that noticed

Rows are written with positioned writes (``os.pwrite``) into files preallocated by
``np.lib.format.open_memmap``; the writer never keeps a mapping of the whole array, because
pages of a shared file mapping that were written count towards the process's RSS and grow it
with the dataset size even after ``flush()``. Each batch is fsync'ed before ``progress.json``
is replaced (unless ``fsync=False``), so a kill or power loss at any point loses at most the
unfinished batch. :meth:`CacheWriter.finalize` is ordered so that a kill at any step either
resumes with every row kept or finds the finished entry (``progress.json`` is removed only after
the entry is renamed into place).

Integrity: finalize records a checksum (xxh3-128, or sha256 where the ``xxhash`` package is
missing) of every layer file and of ``ids.txt`` in ``meta.json``; readers verify each file once
per process (:meth:`FeatureCache.verify`), and an entry whose bytes changed is set aside as
``<key>.corrupt-<time>`` with one :class:`CacheError` line naming the file. Entries written before
checksums existed are read unverified (:meth:`FeatureCache.verify` says so). Write errors (disk
full, I/O errors, permissions) become one :class:`CacheError` line naming the path and what is
kept; no file is ever left truncated under its final name.

Permissions: every file is created ``0o666 & ~umask`` and every directory ``0o777 & ~umask``,
and lock files are writable by the group whenever the group may read them, so a lab sharing a
cache directory (umask 002 or 022, setgid group directory) can read and lock each other's
entries (docs/reliability.md, "A cache shared by a lab").

Nothing here imports torch: everything below the cache works on numpy arrays only.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import math
import os
import re
import secrets
import shutil
import stat
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import filelock
import numpy as np

from medprobe.errors import CacheError  # noqa: F401 (re-exported)
from medprobe.extractors.base import LayerId, layer_filename

__all__ = [
    "CACHE_FORMAT_VERSION",
    "CHECKSUM_ALGORITHMS",
    "CacheError",
    "CacheWriter",
    "FeatureCache",
    "cache_key",
    "sort_layers",
]

#: Bumped when the on-disk layout changes; stored in meta.json and progress.json.
CACHE_FORMAT_VERSION = 1

_DTYPE = np.dtype("<f2")  # float16, little-endian, as written in the .npy headers
_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$")
_LAYER_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
_PARTIAL_PREFIX = ".partial-"
_SHARD_PREFIX = "done-"  # done-<k>.json: rows written by shard writer k of a data-parallel run
_CORRUPT_INFIX = ".corrupt-"  # <key>.corrupt-<UTC time>: an entry set aside by verification
_IDS_FILE = "ids.txt"
_DIGESTS_FILE = "digests.txt"  # one content digest per row (FeatureCache.row_digests)
_CHUNK = 16 << 20  # bytes per read/hash step when streaming a file

#: Checksums recorded in meta.json, fastest first. xxh3-128 (the ``xxhash`` package, which
#: wandb already requires) hashes at memory speed; sha256 is the fallback without it.
CHECKSUM_ALGORITHMS = ("xxh3_128", "sha256")

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# keys


def _check_json(obj: Any, path: str) -> None:
    """Raise TypeError if ``obj`` is not plain, finite JSON (dict keys must be str)."""
    if obj is None or isinstance(obj, (bool, int, str)):
        return
    if isinstance(obj, float):
        if not math.isfinite(obj):
            raise TypeError(f"cache spec value at {path} is not finite JSON: {obj!r}")
        return
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            if not isinstance(k, str):
                raise TypeError(
                    f"cache spec key {k!r} at {path} is {type(k).__name__}; keys must be str"
                )
            _check_json(v, f"{path}.{k}")
        return
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_json(v, f"{path}[{i}]")
        return
    raise TypeError(
        f"cache spec value at {path} has non-JSON type {type(obj).__name__}: {obj!r} "
        "(convert it explicitly, e.g. str(path) or int(np_scalar))"
    )


def _canonical_json(obj: Any) -> str:
    _check_json(obj, "$")
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )


def cache_key(spec: Mapping[str, Any]) -> str:
    """Hex sha256 (64 chars) of the canonical JSON of ``spec``.

    Canonical means ``sort_keys=True``, separators ``(",", ":")``, ``ensure_ascii=True``, so
    the key does not depend on dict insertion order. Tuples hash like lists. The spec must hold
    everything that changes the features (DESIGN.md, "Conventions": a stale cache is worse than
    none).

    Args:
        spec: a mapping of str keys to JSON values (dict with str keys, list/tuple, str, int,
            finite float, bool, None).

    Returns:
        The lowercase hex digest, usable as a directory name.

    Raises:
        TypeError: a value is not JSON (numpy scalars, Paths, sets, NaN/inf, non-str dict keys).
            Nothing is silently stringified.
    """
    if not isinstance(spec, Mapping):
        raise TypeError(f"cache spec must be a mapping, got {type(spec).__name__}")
    return hashlib.sha256(_canonical_json(spec).encode("ascii")).hexdigest()


# --------------------------------------------------------------------------------------------
# helpers


def _norm_layer(layer: Any) -> LayerId:
    """Validate a layer id; ints given as strings (``"10"``, ``"-1"``) become ints."""
    if isinstance(layer, bool) or not isinstance(layer, (int, str)):
        raise CacheError(f"layer id must be int or str, got {type(layer).__name__}: {layer!r}")
    if isinstance(layer, str):
        if layer.lstrip("-").isdigit():
            return int(layer)
        if not _LAYER_NAME_RE.match(layer):
            raise CacheError(f"layer name {layer!r} must match {_LAYER_NAME_RE.pattern}")
    return layer


def sort_layers(layers: Iterable[LayerId]) -> list[LayerId]:
    """Canonical layer order: integers numerically, then named layers in their given order.

    ``[2, 10, 1, "pooled"] -> [1, 2, 10, "pooled"]`` (never the lexicographic file order).
    """
    layers = list(layers)
    ints = sorted(x for x in layers if isinstance(x, int))
    names = [x for x in layers if not isinstance(x, int)]
    return [*ints, *names]


def _check_ids(ids: Sequence[str]) -> list[str]:
    if isinstance(ids, str):
        raise CacheError("ids must be a sequence of str, got a single str")
    out = list(ids)
    if not out:
        raise CacheError("ids is empty; a cache entry needs at least one example")
    seen: set[str] = set()
    for i, x in enumerate(out):
        if not isinstance(x, str) or not x:
            raise CacheError(f"ids[{i}] must be a non-empty str, got {x!r}")
        if any(c in x for c in "\n\r\x00"):
            raise CacheError(f"ids[{i}] = {x!r} contains a newline, carriage return or NUL")
        if x.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:[\\/]", x):
            raise CacheError(f"ids[{i}] = {x!r} must be a relative path, not an absolute one")
        if x in seen:
            raise CacheError(f"ids[{i}] = {x!r} is duplicated; example ids must be unique")
        seen.add(x)
    return out


def _check_digests(digests: Sequence[str], n: int) -> list[str]:
    if isinstance(digests, str):
        raise CacheError("digests must be a sequence of str, got a single str")
    out = list(digests)
    if len(out) != n:
        raise CacheError(f"{len(out)} digests for {n} ids; give one digest per row")
    for i, x in enumerate(out):
        if not isinstance(x, str) or not x or any(c in x for c in "\n\r\x00"):
            raise CacheError(f"digests[{i}] must be a non-empty one-line str, got {x!r}")
    return out


def _ids_sha256(ids: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(ids).encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------------------------
# permissions (docs/reliability.md, "A cache shared by a lab")

_umask_lock = threading.Lock()


def _umask() -> int:
    """This process's umask, read without changing it where Linux allows (/proc), else via a
    brief ``os.umask`` round trip under a lock."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    with _umask_lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _lock_mode() -> int:
    """Mode of lock files: ``0o666 & ~umask``, plus group (other) write where the umask lets the
    group (others) read: a lock file another user can see but not open for writing cannot be
    locked by them (filelock needs write access), which would block a shared cache."""
    mode = 0o666 & ~_umask()
    if mode & stat.S_IRGRP:
        mode |= stat.S_IWGRP
    if mode & stat.S_IROTH:
        mode |= stat.S_IWOTH
    return mode


def _file_lock(path: Path, timeout: float = -1) -> filelock.FileLock:
    return filelock.FileLock(path, timeout=timeout, mode=_lock_mode())


# --------------------------------------------------------------------------------------------
# checksums


def default_checksum() -> str:
    """The algorithm new entries record: ``"xxh3_128"`` if ``xxhash`` imports, else sha256."""
    try:
        import xxhash  # noqa: F401
    except ImportError:
        return "sha256"
    return "xxh3_128"


def _hasher(algorithm: str) -> Any:
    """A fresh streaming hash object (``update(buffer)``, ``hexdigest()``) for ``algorithm``."""
    if algorithm == "xxh3_128":
        try:
            import xxhash
        except ImportError as e:
            raise CacheError(
                "this cache entry's checksums are xxh3_128, which needs the 'xxhash' package "
                "(pip install xxhash, or pass verify=False to read it unverified)"
            ) from e
        return xxhash.xxh3_128()
    if algorithm == "sha256":
        return hashlib.sha256()
    raise CacheError(f"unknown checksum algorithm {algorithm!r}; known: {CHECKSUM_ALGORITHMS}")


def _file_digest(path: Path, algorithm: str) -> str:
    """Hex digest of every byte of ``path``, streamed in 16 MiB reads (bounded memory)."""
    h = _hasher(algorithm)
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        with contextlib.suppress(AttributeError, OSError):
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
        while n := f.readinto(buf):
            h.update(view[:n])
    return str(h.hexdigest())


def _array_file_digest(path: Path, arr: np.ndarray, offset: int, algorithm: str) -> str:
    """Digest of the .npy file ``path`` whose data ``arr`` maps (C order, from byte ``offset``):
    the header is read from the file, the data hashed through the mapping in 16 MiB steps, so
    the caller's later reads find the pages already mapped (one pass over the file, not two)."""
    h = _hasher(algorithm)
    with open(path, "rb") as f:
        h.update(f.read(offset))
    flat = arr.reshape(-1).view(np.uint8)
    for i in range(0, flat.size, _CHUNK):
        h.update(flat[i : i + _CHUNK])
    return str(h.hexdigest())


#: (path, dev, inode, size, mtime_ns, digest) of every file verified by this process.
_VERIFIED: set[tuple[str, int, int, int, int, str]] = set()
_VERIFIED_LOCK = threading.Lock()
_UNVERIFIED_NOTED: set[str] = set()


def _verified_token(path: Path, digest: str) -> tuple[str, int, int, int, int, str]:
    st = os.stat(path)
    return (str(path.resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, digest)


# --------------------------------------------------------------------------------------------
# I/O


def _io_error(what: str, path: Path | str, e: OSError, kept: str) -> CacheError:
    """One line: what failed, the path, the OS reason, and what is kept."""
    reason = e.strerror or str(e)
    if e.errno == errno.ENOSPC:
        reason = "no space left on device"
    elif e.errno == errno.EDQUOT:
        reason = "disk quota exceeded"
    return CacheError(f"{what}: {path}: {reason}; {kept}")


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # some filesystems refuse fsync on directories
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_file_durable(path: Path, text: str, fsync: bool = True) -> None:
    """Write ``text`` (utf-8) to ``path`` via a temp file (+ fsync) + ``os.replace``.

    The temp file is created ``0o666 & ~umask`` (not ``tempfile.mkstemp``'s owner-only 0o600, so
    other users of a shared cache can read it). On any error the temp file is removed and
    ``path`` is untouched: it is never left truncated.

    Raises:
        OSError: as raised by the file system (the caller names the entry).
    """
    data = text.encode("utf-8")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(tmp, flags, 0o666)
            break
        except FileExistsError:
            continue
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError) and not e.filename:
            e.filename = str(path)  # name the file the caller meant, not the temp file
        raise


def _npy_info(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, data offset) of a C-order .npy file, read from its header only."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        if fortran:
            raise CacheError(f"{path}: Fortran-ordered array, expected C order")
        return shape, dtype, f.tell()


# --------------------------------------------------------------------------------------------
# the cache


#: touched on every read of an entry (:meth:`FeatureCache.mark_used`)
LAST_USED_FILE = ".last_used"


class FeatureCache:
    """A directory of content-addressed feature entries (see the module docstring for layout).

    Typical use by the runner::

        cache = FeatureCache(cfg.cache_dir)
        key = cache_key(spec)
        with cache.lock(key):
            if not cache.is_complete(key):
                w = cache.writer(key, ids, layers, spec)   # resumes a killed run
                for batch in loader_from(w.n_done):
                    w.write(extractor.extract(batch, layers))
                w.finalize()
        x = cache.load(key, layer)                          # (N, D) float16, read-only memmap

    Args:
        root: cache directory; created on first write or lock.
        verify: check every file read against the checksum recorded at finalize, once per file
            per process (:meth:`verify`; default). ``False`` trusts the files (``cache.verify``
            switch): for a cache on storage you trust, where even one extra pass is too much.
    """

    def __init__(self, root: str | os.PathLike[str], *, verify: bool = True) -> None:
        self.root = Path(root)
        self.verify_files = bool(verify)

    def __repr__(self) -> str:
        return f"FeatureCache({str(self.root)!r})"

    # ---- paths

    @staticmethod
    def _check_key(key: str) -> str:
        if not isinstance(key, str) or not _KEY_RE.match(key) or _CORRUPT_INFIX in key:
            raise CacheError(f"invalid cache key {key!r}: expected a hex digest from cache_key()")
        return key

    def entry_dir(self, key: str) -> Path:
        """``root/<key>``: the directory of the complete entry (may not exist)."""
        return self.root / self._check_key(key)

    def partial_dir(self, key: str) -> Path:
        """``root/.partial-<key>``: where a :class:`CacheWriter` writes before finalize."""
        return self.root / f"{_PARTIAL_PREFIX}{self._check_key(key)}"

    def lock_path(self, key: str) -> Path:
        """``root/<key>.lock``: the lock file used by :meth:`lock`."""
        return self.root / f"{self._check_key(key)}.lock"

    # ---- reading

    def is_complete(self, key: str) -> bool:
        """True iff ``root/<key>/meta.json`` exists (meta.json is written last)."""
        return (self.entry_dir(key) / "meta.json").is_file()

    def keys(self) -> list[str]:
        """Keys of all complete entries, sorted (entries set aside as corrupt are not listed)."""
        if not self.root.is_dir():
            return []
        return sorted(
            p.name
            for p in self.root.iterdir()
            if p.is_dir()
            and not p.name.startswith(".")
            and _CORRUPT_INFIX not in p.name
            and (p / "meta.json").is_file()
        )

    def mark_used(self, key: str) -> None:
        """Record that ``key`` was read now (``<entry>/.last_used``'s mtime; ``medprobe cache``
        lists it and ``--older-than`` prunes by it). Best effort: a read-only cache is fine."""
        try:
            (self.entry_dir(key) / LAST_USED_FILE).touch()
        except OSError:
            pass

    def corrupt_entries(self) -> list[Path]:
        """Entries set aside by :meth:`verify` (``root/<key>.corrupt-<time>``), sorted."""
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.iterdir() if p.is_dir() and _CORRUPT_INFIX in p.name)

    def meta(self, key: str, *, set_aside: bool = True) -> dict[str, Any]:
        """The parsed ``meta.json`` of a complete entry.

        Keys: ``format_version``, ``key``, ``n`` (rows), ``dtype`` (``"float16"``), ``layers``
        (canonical order), ``dims`` (feature width per layer, aligned with ``layers``),
        ``files`` (file name per layer), ``created`` (ISO-8601 UTC), ``spec`` (as given to
        :meth:`writer`); since checksums exist also ``checksums`` (``{"algorithm": name,
        "files": {file name: hex digest}}`` for every layer file and ``ids.txt``) and
        ``all_finite`` (True: every row passed the writer's finiteness check).

        A meta.json that cannot be parsed or lacks those keys is damaged (it is written
        atomically, so never seen half-written): with ``set_aside`` (the default) the entry is
        set aside like one failing its checksums, so the next run recomputes it instead of
        stopping on it again; ``medprobe cache list`` passes False (listing changes nothing).

        Raises:
            CacheError: the entry is missing/incomplete, or meta.json is unreadable or damaged.
        """
        path = self.entry_dir(key) / "meta.json"
        if not path.is_file():
            raise CacheError(f"cache entry {key} is missing or incomplete (no {path})")
        try:
            with open(path, encoding="utf-8") as f:
                meta = json.load(f)
        except OSError as e:
            raise CacheError(f"cannot read {path}: {e}") from e
        except ValueError as e:  # not JSON, or not UTF-8
            if set_aside:
                self._set_aside(key, path, "", problem=f"is not valid JSON ({e})")
            raise CacheError(f"cannot read {path}: {e}") from e
        if not isinstance(meta, dict) or not {"layers", "files", "dims", "n"} <= meta.keys():
            if set_aside:
                self._set_aside(key, path, "", problem="is not a medprobe cache meta file")
            raise CacheError(f"{path} is not a medprobe cache meta file")
        return meta

    def ids(self, key: str) -> list[str]:
        """Example ids of a complete entry, in row order (``len == meta(key)["n"]``).

        The bytes of ids.txt are checked against their checksum (when the cache verifies and
        the entry has checksums): two swapped lines would silently pair features with the wrong
        labels.

        Raises:
            CacheError: the entry is incomplete; ids.txt disagrees with meta.json; ids.txt does
                not match its checksum (the entry is set aside, see :meth:`verify`).
        """
        meta = self.meta(key)
        n = meta["n"]
        path = self.entry_dir(key) / _IDS_FILE
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            self._set_aside(key, path, "", problem="is missing")
        except OSError as e:
            raise CacheError(f"cannot read {path}: {e}") from e
        if self.verify_files:
            self._verify_ids(key, meta, path, raw)
        ids = raw.decode("utf-8").split("\n")
        if ids and ids[-1] == "":
            ids.pop()
        if len(ids) != n:
            self._set_aside(key, path, "", problem=f"has {len(ids)} ids but meta.json says n={n}")
        return ids

    def layers(self, key: str) -> list[LayerId]:
        """Layers of a complete entry: ints numerically sorted, then named layers.

        Read from meta.json, never from a (lexicographic) listing of the files.
        """
        return sort_layers(self.meta(key)["layers"])

    def row_digests(self, key: str) -> list[str] | None:
        """The image digest of every row of a complete entry (``digests.txt``), verified.

        What rows are reused by (:meth:`CacheWriter.copy_rows`): a row whose image has the same
        digest holds the same features under the same extractor fingerprint. The file is always
        checked against its checksum, whatever the cache's ``verify`` setting: a reused row is
        copied into a new entry with new checksums, so a changed file would go unnoticed there.

        Returns:
            ``len == meta(key)["n"]`` strings in row order, or None for an entry written without
            digests (before issue 14.11, or by a writer given none) or without checksums.

        Raises:
            CacheError: the entry is incomplete; digests.txt does not match its checksum (the
                entry is set aside, see :meth:`verify`) or disagrees with meta.json.
        """
        meta = self.meta(key)
        sums = self._checksums(meta)
        if sums is None or _DIGESTS_FILE not in sums[1]:
            return None
        path = self.entry_dir(key) / _DIGESTS_FILE
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            self._set_aside(key, path, "", problem="is missing")
        except OSError as e:
            raise CacheError(f"cannot read {path}: {e.strerror or e}") from e
        h = _hasher(sums[0])
        h.update(raw)
        if sums[1][_DIGESTS_FILE] != h.hexdigest():
            self._set_aside(key, path, "its bytes changed since the entry was written")
        digests = raw.decode("utf-8").split("\n")
        if digests and digests[-1] == "":
            digests.pop()
        if len(digests) != int(meta["n"]):
            raise CacheError(f"{path} has {len(digests)} lines but meta.json says n={meta['n']}")
        return digests

    def load(self, key: str, layer: LayerId, *, verify: bool | None = None) -> np.ndarray:
        """Features of one layer as a read-only memmap, checked against its checksum.

        The first load of a layer file in a process hashes the whole file through the returned
        mapping (one pass at disk speed; later reads of the rows find the pages mapped) and
        compares it with the checksum recorded at finalize; later loads of the unchanged file
        skip it. See ``benchmarks/bench_cache_verify.py`` for the cost.

        Args:
            key: a complete entry's key.
            layer: a stored layer id (ints given as strings, e.g. ``"10"``, are accepted).
            verify: override the cache's ``verify`` setting for this call.

        Returns:
            ``np.memmap`` of shape (N, D), dtype float16, ``flags.writeable == False``; row i
            belongs to ``ids(key)[i]``. Loaded with ``allow_pickle=False``.

        Raises:
            CacheError: the entry is incomplete; the layer is not stored (the message lists the
                available layers); the file is missing or its shape/dtype disagree with meta;
                the file does not match its checksum (one line naming the file; the entry is set
                aside as ``<key>.corrupt-<time>``, not deleted, and the next run recomputes it).
        """
        meta = self.meta(key)
        try:
            want = _norm_layer(layer)
        except CacheError:
            want = None
        stored = list(meta["layers"])
        if want is None or want not in stored:
            raise CacheError(
                f"layer {layer!r} is not in cache entry {key}; available layers: "
                f"{sort_layers(stored)}"
            )
        i = stored.index(want)
        path = self.entry_dir(key) / meta["files"][i]
        # a missing, truncated or reshaped file of a complete entry is damage, like a checksum
        # mismatch: set aside, so the next run recomputes it instead of stopping on it again
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except FileNotFoundError:
            self._set_aside(key, path, "", problem="is missing")
        except ValueError as e:  # "EOF: reading array header", "mmap length is greater ..."
            self._set_aside(key, path, "", problem=f"is truncated or not a .npy file ({e})")
        except OSError as e:
            raise CacheError(
                f"cannot load layer {want!r} of cache entry {key} ({path}): {e}"
            ) from e
        expected = (int(meta["n"]), int(meta["dims"][i]))
        if arr.shape != expected or arr.dtype != np.float16:
            self._set_aside(key, path, "", problem=f"has shape {arr.shape} dtype {arr.dtype}, "
                            f"but meta.json says {expected} float16")  # fmt: skip
        if self.verify_files if verify is None else verify:
            self._verify_file(key, meta, path, arr)
        return arr

    def verify(self, key: str, layers: Sequence[LayerId] | None = None) -> dict[str, Any]:
        """Check ids.txt and the layer files of an entry against the checksums in meta.json.

        Each file is hashed at most once per process while it is unchanged (same inode, size
        and mtime). Called by :meth:`ids` and :meth:`load` (unless ``verify=False``); call it
        directly to check a whole entry (e.g. a ``medprobe cache verify`` command).

        Args:
            key: a complete entry's key.
            layers: the layers to check (default: every stored layer).

        Returns:
            ``{"verified": True, "algorithm": name, "files": [names checked]}``, or, for an entry
            written before checksums existed, ``{"verified": False, "reason": "..."}``: such
            entries are read unverified (nothing to compare with); delete them to recompute
            with checksums.

        Raises:
            CacheError: a file is missing or does not match its checksum: one line naming the
                file; the entry is renamed to ``<key>.corrupt-<time>`` (set aside, never
                deleted) so the next run recomputes it.
        """
        meta = self.meta(key)
        sums = self._checksums(meta)
        if sums is None:
            return {
                "verified": False,
                "reason": "written before medprobe recorded checksums: its files cannot be "
                "verified; delete the entry to recompute it with checksums",
            }
        algorithm, _ = sums
        want = list(meta["layers"]) if layers is None else [_norm_layer(x) for x in layers]
        path = self.entry_dir(key) / _IDS_FILE
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            self._set_aside(key, path, "", problem="is missing")
        except OSError as e:
            raise CacheError(f"cannot read {path}: {e.strerror or e}") from e
        self._verify_ids(key, meta, path, raw)
        checked = [_IDS_FILE]
        if _DIGESTS_FILE in sums[1]:
            self._verify_file(key, meta, self.entry_dir(key) / _DIGESTS_FILE, None)
            checked.append(_DIGESTS_FILE)
        for layer in want:
            if layer not in meta["layers"]:
                raise CacheError(f"layer {layer!r} is not in cache entry {key}")
            path = self.entry_dir(key) / meta["files"][list(meta["layers"]).index(layer)]
            self._verify_file(key, meta, path, None)
            checked.append(path.name)
        return {"verified": True, "algorithm": algorithm, "files": checked}

    def check_finite(
        self, key: str, layer: LayerId, rows: Sequence[int] | np.ndarray | None = None
    ) -> None:
        """Refuse a cached layer holding NaN or inf, naming the layer and the first row ids.

        The writer refuses non-finite features, so an entry with checksums and ``all_finite``
        whose file was verified in this process is finite by construction and returns at once.
        Otherwise (older entries, ``verify=False``) the rows are scanned in 64 MiB blocks
        (float16 bit test, bounded memory).

        Args:
            key: a complete entry's key.
            layer: a stored layer.
            rows: row indices to check (e.g. the probe's train/val/test rows); default all.

        Raises:
            CacheError: ``"layer 10 of cache entry <key> holds NaN/inf in 3 of 1000 rows (ids
                a.png, b.png, c.png): ..."``, one line; or as :meth:`load`.
        """
        meta = self.meta(key)
        arr = self.load(key, layer)
        i = list(meta["layers"]).index(_norm_layer(layer))
        path = self.entry_dir(key) / meta["files"][i]
        sums = self._checksums(meta)
        if meta.get("all_finite") is True and sums is not None and self.verify_files:
            with contextlib.suppress(OSError):
                if _verified_token(path, sums[1].get(path.name, "")) in _VERIFIED:
                    return
        n, d = arr.shape
        idx = np.arange(n) if rows is None else np.unique(np.asarray(rows, dtype=np.int64))
        if idx.size and (idx[0] < 0 or idx[-1] >= n):
            raise CacheError(f"check_finite: row indices outside [0, {n}) for cache entry {key}")
        step = max(1, (64 << 20) // max(1, d * 2))
        bad: list[int] = []
        for s in range(0, idx.size, step):
            sel = idx[s : s + step]
            block = arr[sel[0] : sel[-1] + 1] if rows is None else arr[sel]
            bits = np.asarray(block).view(np.uint16)
            nonfinite = ((bits & 0x7C00) == 0x7C00).any(axis=1)  # exponent all ones: inf/nan
            bad += sel[nonfinite].tolist()
        if bad:
            ids = self.ids(key)
            shown = ", ".join(ids[r] for r in bad[:5]) + (", ..." if len(bad) > 5 else "")
            raise CacheError(
                f"layer {_norm_layer(layer)!r} of cache entry {key} holds NaN/inf in {len(bad)} "
                f"of {idx.size} rows (ids {shown}); it was written without medprobe's "
                f"finiteness check or changed since: delete {self.entry_dir(key)} to recompute"
            )

    # ---- integrity helpers

    @staticmethod
    def _checksums(meta: Mapping[str, Any]) -> tuple[str, dict[str, str]] | None:
        sums = meta.get("checksums")
        if not isinstance(sums, dict) or not isinstance(sums.get("files"), dict):
            return None
        return str(sums.get("algorithm")), dict(sums["files"])

    def _note_unverified(self, key: str) -> None:
        if key not in _UNVERIFIED_NOTED:
            _UNVERIFIED_NOTED.add(key)
            log.warning(
                "cache entry %s was written before medprobe recorded checksums: it is read "
                "unverified (delete %s to recompute it with checksums)",
                key,
                self.entry_dir(key),
            )

    def _verify_ids(self, key: str, meta: Mapping[str, Any], path: Path, raw: bytes) -> None:
        sums = self._checksums(meta)
        if sums is None:
            self._note_unverified(key)
            return
        h = _hasher(sums[0])
        h.update(raw)
        if sums[1].get(_IDS_FILE) != h.hexdigest():
            self._set_aside(key, path, "its bytes changed since the entry was written")

    def _verify_file(
        self, key: str, meta: Mapping[str, Any], path: Path, arr: np.ndarray | None
    ) -> None:
        """Hash ``path`` (through ``arr``'s mapping if given) unless this process already
        verified the unchanged file; set the entry aside on a mismatch."""
        sums = self._checksums(meta)
        if sums is None:
            self._note_unverified(key)
            return
        algorithm, files = sums
        want = files.get(path.name)
        if want is None:
            self._set_aside(key, path, "meta.json records no checksum for it")
        try:
            token = _verified_token(path, str(want))
        except FileNotFoundError:
            self._set_aside(key, path, "", problem="is missing")
        except OSError as e:
            raise CacheError(f"cannot read {path}: {e.strerror or e}") from e
        if token in _VERIFIED:
            return
        try:
            if arr is not None and isinstance(arr, np.memmap):
                got = _array_file_digest(path, arr, int(arr.offset), algorithm)
            else:
                got = _file_digest(path, algorithm)
        except OSError as e:
            raise CacheError(f"cannot read {path}: {e.strerror or e}") from e
        if got != want:
            self._set_aside(key, path, "its bytes changed since the entry was written")
        with _VERIFIED_LOCK:
            _VERIFIED.add(token)

    def _set_aside(self, key: str, path: Path, why: str, *, problem: str | None = None) -> NoReturn:
        """Rename the entry to ``<key>.corrupt-<UTC time>`` and raise one CacheError line.

        ``problem`` replaces the default "does not match the checksum in meta.json (<why>)"."""
        entry = self.entry_dir(key)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        aside = self.root / f"{key}{_CORRUPT_INFIX}{stamp}"
        try:
            os.rename(entry, aside)
            _fsync_dir(self.root)
            where = f"the entry was set aside as {aside} (not deleted); the next run recomputes it"
        except FileNotFoundError:
            where = "another process has already set the entry aside; the next run recomputes it"
        except OSError as e:
            where = (
                f"it could not be set aside ({e.strerror or e}): move or delete {entry} to "
                "recompute it"
            )
        if problem is None:
            problem = f"does not match the checksum in meta.json ({why})"
        raise CacheError(f"cache entry {key}: {path} {problem}; {where}")

    # ---- writing

    def lock(self, key: str, timeout: float = -1) -> filelock.FileLock:
        """An (unacquired) inter-process lock on ``root/<key>.lock``.

        Use as ``with cache.lock(key): if not cache.is_complete(key): ...`` so two jobs never
        write one entry. The lock file is created ``0o666 & ~umask`` plus group write where the
        group may read, so other users of a shared cache can take it (see the module docstring).

        Args:
            timeout: seconds to wait on acquire; -1 waits forever, 0 tries once.

        Raises (on acquire):
            filelock.Timeout: another process or thread holds the lock past ``timeout``.
        """
        path = self.lock_path(key)
        self.root.mkdir(parents=True, exist_ok=True)
        return _file_lock(path, timeout=timeout)

    def writer(
        self,
        key: str,
        ids: Sequence[str],
        layers: Sequence[LayerId],
        meta: Mapping[str, Any],
        *,
        fsync: bool = True,
        digests: Sequence[str] | None = None,
    ) -> CacheWriter:
        """A :class:`CacheWriter` for ``key``; resumes a partial entry with the same ids.

        Hold :meth:`lock` while writing: the writer itself takes no lock.

        Args:
            key: from :func:`cache_key` (normally of ``meta``).
            ids: N unique example ids (relative paths, no newlines), in row order.
            layers: the layers every :meth:`CacheWriter.write` will provide.
            meta: the spec that produced ``key``; JSON, stored as ``meta.json["spec"]``.
            fsync: fsync every batch before recording it in progress.json (default). Without
                it a killed process still loses at most the unfinished batch (the page cache
                outlives the process), but an OS crash or power loss may leave progress.json
                ahead of the data, i.e. silently zero rows. About 15 ms per batch on a local
                SSD; turn off only for throw-away caches.
            digests: one digest of each row's image (aligned with ``ids``; e.g. the sha256 of
                the file), stored as ``digests.txt`` with a checksum at finalize so later
                entries can reuse rows by image content (:meth:`row_digests`,
                :meth:`CacheWriter.copy_rows`). Not part of the key.

        Raises:
            CacheError: the entry is already complete; bad ids, layers or digests.
            TypeError: ``meta`` is not JSON.
        """
        if self.is_complete(key):
            raise CacheError(f"cache entry {key} is already complete at {self.entry_dir(key)}")
        return CacheWriter(self, key, ids, layers, meta, fsync=fsync, digests=digests)

    def shard_writer(
        self,
        key: str,
        ids: Sequence[str],
        layers: Sequence[LayerId],
        *,
        rows: tuple[int, int],
        shard: int,
        fsync: bool = True,
    ) -> CacheWriter:
        """A writer for rows ``[start, stop)`` of a partial entry, one per data-parallel process.

        The coordinator (:meth:`writer`, in the process holding :meth:`lock`) must have created
        or resumed the partial entry first; shard writers take no lock of the entry. Each
        records its rows in ``done-<shard>.json``; the coordinator's :meth:`CacheWriter.finalize`
        runs once every shard is written. Rows done earlier (by any process layout) are
        skipped: see :meth:`CacheWriter.pending_rows`.

        Args:
            key, ids, layers: exactly as given to the coordinator's :meth:`writer`.
            rows: ``(start, stop)`` with ``0 <= start <= stop <= len(ids)``.
            shard: this process's number (e.g. its rank); unique among concurrent writers.
            fsync: as for :meth:`writer`.

        Raises:
            CacheError: the entry is already complete; no matching partial entry; bad range.
        """
        if self.is_complete(key):
            raise CacheError(f"cache entry {key} is already complete at {self.entry_dir(key)}")
        return CacheWriter(self, key, ids, layers, {}, fsync=fsync, rows=rows, shard=shard)

    def remove_stale_partials(self, min_age_s: float = 0.0) -> list[Path]:
        """Delete partial entries nobody is writing (lock free) and older than ``min_age_s``.

        Partials that belong to a complete entry are always removed. Returns removed paths.
        """
        removed: list[Path] = []
        if not self.root.is_dir():
            return removed
        now = time.time()
        for p in sorted(self.root.glob(f"{_PARTIAL_PREFIX}*")):
            key = p.name[len(_PARTIAL_PREFIX) :]
            if not p.is_dir() or not _KEY_RE.match(key):
                continue
            if not self.is_complete(key) and now - p.stat().st_mtime < min_age_s:
                continue
            try:
                with self.lock(key, timeout=0):
                    shutil.rmtree(p, ignore_errors=True)
                    removed.append(p)
            except filelock.Timeout:
                continue
        return removed


class CacheWriter:
    """Streams (b, D) feature batches of every layer into a partial entry, then finalizes it.

    Create with :meth:`FeatureCache.writer` (the *coordinator*: a single process writing the
    whole entry, or the main process of a data-parallel run) or :meth:`FeatureCache.shard_writer`
    (one process of a data-parallel run writing its own row range of the same partial entry).
    Rows are written in the order of ``ids``, skipping rows already done; :meth:`pending_rows`
    says which rows the next batches must hold. The feature width D of each layer is fixed by
    the first batch anyone writes, when the (n_total, D) float16 files are preallocated (under
    a lock file inside the partial directory, so concurrent shard writers allocate once). Only
    the current batch is held in memory.

    Progress is a list of done row intervals: the coordinator keeps them in ``progress.json``
    (``"done": [[start, stop], ...]`` and ``"n_done"``); shard ``k`` records the intervals it
    wrote in ``done-<k>.json``. A coordinator created on an existing partial entry with the same
    ids (sha256), layers and row count resumes it: it merges every ``done-*.json`` into
    ``progress.json`` first, so a run resumes whatever number of processes wrote before.
    Otherwise the partial is deleted and writing restarts at row 0.

    Attributes:
        key: the entry key.
        layers: the layers in canonical order (:func:`sort_layers`).
        n_total: number of rows of the entry (``len(ids)``).
        rows: ``(start, stop)``, the row range this writer fills (``(0, n_total)`` for the
            coordinator).
        shard: None for the coordinator, else the shard number given to ``shard_writer``.
        n_done: rows of :attr:`rows` durably written so far (restored on resume).
        resumed: True if rows of :attr:`rows` were restored from an earlier partial.
        dims: feature width per layer, once known.
        fsync: whether each batch is fsync'ed (see :meth:`FeatureCache.writer`).
    """

    def __init__(
        self,
        cache: FeatureCache,
        key: str,
        ids: Sequence[str],
        layers: Sequence[LayerId],
        meta: Mapping[str, Any],
        *,
        fsync: bool = True,
        rows: tuple[int, int] | None = None,
        shard: int | None = None,
        digests: Sequence[str] | None = None,
    ) -> None:
        self.cache = cache
        self.fsync = fsync
        self.key = cache._check_key(key)
        self._ids = _check_ids(ids)
        self._digests = None if digests is None else _check_digests(digests, len(self._ids))
        if not isinstance(meta, Mapping):
            raise TypeError(f"meta must be a mapping, got {type(meta).__name__}")
        _canonical_json(meta)  # fail now, not after hours of extraction
        self._spec: dict[str, Any] = json.loads(json.dumps(meta))
        if isinstance(layers, (int, str)):
            layers = [layers]
        norm = [_norm_layer(x) for x in layers]
        if not norm:
            raise CacheError(f"cache entry {key}: no layers given")
        if len(set(norm)) != len(norm):
            raise CacheError(f"cache entry {key}: duplicate layers in {list(layers)}")
        self.layers: list[LayerId] = sort_layers(norm)
        self._files = {x: layer_filename(x) + ".npy" for x in self.layers}
        if len(set(self._files.values())) != len(self._files):
            raise CacheError(f"cache entry {key}: layers {self.layers} map to clashing files")
        self.n_total = len(self._ids)
        if rows is None:
            rows = (0, self.n_total)
        start, stop = (int(rows[0]), int(rows[1]))
        if not 0 <= start <= stop <= self.n_total:
            raise CacheError(
                f"cache entry {key}: row range {rows!r} is outside [0, {self.n_total}]"
            )
        if shard is not None and (isinstance(shard, bool) or not isinstance(shard, int)
                                  or shard < 0):  # fmt: skip
            raise CacheError(f"cache entry {key}: shard must be an int >= 0, got {shard!r}")
        self.rows = (start, stop)
        self.shard = shard
        self.resumed = False
        self.dims: dict[LayerId, int] = {}
        self._offsets: dict[LayerId, int] = {}
        self._fds: dict[LayerId, int] = {}
        self._closed = False
        self._ids_hash = _ids_sha256(self._ids)
        self._done: list[list[int]] = []  # merged done intervals known to this writer
        self._new: list[list[int]] = []  # intervals this shard writer wrote (done-<k>.json)
        self.dir = cache.partial_dir(key)
        try:
            if shard is None:
                cache.root.mkdir(parents=True, exist_ok=True)
                if not self._try_resume():
                    if self.dir.exists():
                        shutil.rmtree(self.dir)
                    self.dir.mkdir(parents=True)
                    self._done = []
                    self._save_progress()
            else:
                self._attach()
        except OSError as e:
            self._close_fds()
            raise _io_error(
                f"cannot create cache entry {key}",
                e.filename or self.dir,
                e,
                "nothing was extracted yet; free space or fix the permissions and rerun",
            ) from None
        self._pending = _gaps(start, stop, self._done)
        self.resumed = self.n_done > 0

    # ---- state

    def _progress(self) -> dict[str, Any]:
        return {
            "format_version": CACHE_FORMAT_VERSION,
            "key": self.key,
            "ids_sha256": self._ids_hash,
            "n_total": self.n_total,
            "layers": self.layers,
            "dims": [self.dims.get(x) for x in self.layers],
            "n_done": _covered(self._done),
            "done": self._done,
        }

    def _save_progress(self) -> None:
        if self.shard is None:
            _write_file_durable(
                self.dir / "progress.json", json.dumps(self._progress()), fsync=self.fsync
            )
        else:
            shard_progress = {"key": self.key, "ids_sha256": self._ids_hash, "done": self._new}
            _write_file_durable(
                self.dir / f"{_SHARD_PREFIX}{self.shard}.json",
                json.dumps(shard_progress),
                fsync=self.fsync,
            )

    def _read_progress(self) -> list[list[int]] | None:
        """Done intervals from a matching progress.json, or None (missing, corrupt, different)."""
        path = self.dir / "progress.json"
        if not path.is_file():
            return None
        try:
            with open(path, encoding="utf-8") as f:
                prog = json.load(f)
            same = (
                prog.get("format_version") == CACHE_FORMAT_VERSION
                and prog.get("key") == self.key
                and prog.get("ids_sha256") == self._ids_hash
                and prog.get("n_total") == self.n_total
                and prog.get("layers") == self.layers
            )
            if not same:
                return None
            done = prog.get("done")
            if done is None:  # written before intervals existed: a done prefix
                done = [[0, int(prog.get("n_done", -1))]]
            return _check_intervals(done, self.n_total)
        except (OSError, ValueError, TypeError, AttributeError):
            return None

    def _shard_files_done(self) -> list[list[int]]:
        """Union of the done intervals recorded by shard writers (matching files only)."""
        out: list[list[int]] = []
        for p in sorted(self.dir.glob(f"{_SHARD_PREFIX}*.json")):
            try:
                with open(p, encoding="utf-8") as f:
                    prog = json.load(f)
                if prog.get("key") != self.key or prog.get("ids_sha256") != self._ids_hash:
                    continue
                out += _check_intervals(prog.get("done"), self.n_total)
            except (OSError, ValueError, TypeError, AttributeError):
                continue
        return _merge(out)

    def _try_resume(self) -> bool:
        """Coordinator: restore the done intervals of a matching partial (merging shard files)."""
        done = self._read_progress()
        if done is None:
            return False
        done = _merge(done + self._shard_files_done())
        if not done:
            return False  # nothing worth keeping: start clean (no stale layer files)
        dims: dict[LayerId, int] = {}
        offsets: dict[LayerId, int] = {}
        for layer, name in self._files.items():
            try:
                shape, dtype, offset = _npy_info(self.dir / name)
            except (OSError, ValueError, CacheError):
                return False
            if len(shape) != 2 or shape[0] != self.n_total or dtype != _DTYPE:
                return False
            dims[layer], offsets[layer] = int(shape[1]), offset
        self.dims, self._offsets = dims, offsets
        self._done = done
        self._save_progress()  # shard files are merged in: remove them
        for p in self.dir.glob(f"{_SHARD_PREFIX}*.json"):
            p.unlink(missing_ok=True)
        self._open_fds()
        return True

    def _attach(self) -> None:
        """Shard writer: join the partial entry the coordinator created (or resumed)."""
        done = self._read_progress() if self.dir.is_dir() else None
        if done is None:
            raise CacheError(
                f"cache entry {self.key}: no matching partial entry at {self.dir}; the "
                "coordinator (FeatureCache.writer) must create it before shard writers start"
            )
        self._done = done

    def _open_fds(self) -> None:
        for layer, name in self._files.items():
            self._fds[layer] = os.open(self.dir / name, os.O_RDWR)

    def _close_fds(self) -> None:
        for fd in self._fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()

    def _ensure_files(self, dims: Mapping[LayerId, int]) -> None:
        """Open the (n_total, D) float16 layer files, preallocating them (sparse) if needed.

        Under ``alloc.lock`` in the partial directory: the first writer allocates, the others
        find the files and check that their feature widths agree.
        """
        with _file_lock(self.dir / "alloc.lock"):
            found: dict[LayerId, tuple[int, int]] = {}
            for layer, name in self._files.items():
                path = self.dir / name
                if path.is_file():
                    shape, dtype, offset = _npy_info(path)
                    if len(shape) != 2 or shape[0] != self.n_total or dtype != _DTYPE:
                        raise CacheError(f"{path}: shape {shape} {dtype}, expected "
                                         f"({self.n_total}, D) float16")  # fmt: skip
                    found[layer] = (int(shape[1]), offset)
            if found and len(found) != len(self._files):
                missing = [x for x in self.layers if x not in found]
                raise CacheError(f"partial entry {self.dir} lacks files for layers {missing}")
            if found:
                for layer, (d, offset) in found.items():
                    if d != dims[layer]:
                        raise CacheError(
                            f"layer {layer!r}: feature width {dims[layer]} != {d} already in "
                            f"the partial entry {self.dir}"
                        )
                    self._offsets[layer] = offset
            else:
                for layer, name in self._files.items():
                    mm = np.lib.format.open_memmap(
                        self.dir / name, mode="w+", dtype=_DTYPE, shape=(self.n_total, dims[layer])
                    )
                    self._offsets[layer] = int(mm.offset)
                    del mm  # never keep a whole-array mapping: written pages count towards RSS
                    if self.fsync:
                        fd = os.open(self.dir / name, os.O_RDONLY)
                        try:
                            os.fsync(fd)
                        finally:
                            os.close(fd)
            self.dims = dict(dims)
            self._open_fds()

    # ---- public

    @property
    def ids(self) -> list[str]:
        """The example ids, in row order (a copy)."""
        return list(self._ids)

    @property
    def closed(self) -> bool:
        """True once finalized, closed, or after a write error (the partial stays resumable)."""
        return self._closed

    @property
    def n_done(self) -> int:
        """Rows of :attr:`rows` written (durably) so far, including resumed ones."""
        return _covered(_clip(self._done, *self.rows))

    @property
    def n_remaining(self) -> int:
        """Rows of :attr:`rows` still to write."""
        return self.rows[1] - self.rows[0] - self.n_done

    def pending_rows(self) -> np.ndarray:
        """(n_remaining,) int64 row indices still to write, in the order writes must follow."""
        if not self._pending:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate([np.arange(a, b, dtype=np.int64) for a, b in self._pending])

    def write(self, feats: Mapping[LayerId, Any]) -> None:
        """Write one batch of b rows: the next b of :meth:`pending_rows`, for every layer.

        Everything is checked before anything is written, so a failed call changes nothing.

        Args:
            feats: ``{layer: (b, D) array}`` for exactly the writer's layers (ints given as
                strings are accepted), real-valued (float or int), same b for all layers; D is
                fixed per layer by the first batch. Cast to float16.

        Raises:
            CacheError: missing/extra layers; wrong ndim, b or D; more rows than remain;
                non-finite input, or values outside the float16 range (|x| > 65504) that
                overflow in the cast (the message names the layer); writer already finalized.
        """
        if self._closed:
            raise CacheError(f"cache writer for {self.key} is closed")
        got: dict[LayerId, Any] = {}
        for k, v in feats.items():
            got[_norm_layer(k)] = v
        if set(got) != set(self.layers):
            missing = [x for x in self.layers if x not in got]
            extra = [x for x in got if x not in self._files]
            raise CacheError(
                f"cache entry {self.key}: batch layers differ from the writer's "
                f"(missing {missing}, unexpected {extra})"
            )
        rows: dict[LayerId, np.ndarray] = {}
        b: int | None = None
        first: LayerId | None = None
        for layer in self.layers:
            x = np.asarray(got[layer])
            if x.dtype.kind not in "fiu":
                raise CacheError(f"layer {layer!r}: features have dtype {x.dtype}, expected real")
            if x.ndim != 2:
                raise CacheError(f"layer {layer!r}: expected a (b, D) array, got shape {x.shape}")
            if b is None:
                b, first = x.shape[0], layer
            elif x.shape[0] != b:
                raise CacheError(
                    f"layer {layer!r}: batch has {x.shape[0]} rows but layer {first!r} has {b}"
                )
            if layer in self.dims and x.shape[1] != self.dims[layer]:
                raise CacheError(
                    f"layer {layer!r}: feature width {x.shape[1]} != {self.dims[layer]} "
                    "of earlier batches"
                )
            if x.shape[1] == 0:
                raise CacheError(f"layer {layer!r}: feature width is 0")
            with np.errstate(over="ignore", invalid="ignore"):
                y = np.ascontiguousarray(x, dtype=_DTYPE)
            if not np.isfinite(y).all():
                if x.dtype.kind == "f" and not np.isfinite(x).all():
                    why = "non-finite input features (nan/inf)"
                else:
                    why = (
                        f"max |x| = {float(np.max(np.abs(x))):.6g} overflows float16 "
                        "(|x| > 65504); scale or normalise the features"
                    )
                raise CacheError(f"layer {layer!r}: {why} in cache entry {self.key}")
            rows[layer] = y
        assert b is not None
        if b == 0:
            return
        if b > self.n_remaining:
            limit = (
                f"n_total={self.n_total}"
                if self.rows == (0, self.n_total)
                else f"the {self.rows[1] - self.rows[0]} rows of range {list(self.rows)}"
            )
            raise CacheError(
                f"cache entry {self.key}: batch of {b} rows after {self.n_done} exceeds {limit}"
            )
        try:
            self._write_rows(rows, b)
        except OSError as e:
            kept = self.n_done
            self._close_fds()
            self._closed = True
            raise _io_error(
                f"cannot write cache entry {self.key}",
                e.filename or self.dir,
                e,
                f"the {kept} rows written before are kept in {self.dir}: free space (or fix "
                "the disk) and rerun to resume from there",
            ) from None

    def _write_rows(self, rows: Mapping[LayerId, np.ndarray], b: int) -> None:
        """Positioned writes of one checked batch, fsync, then progress; the writer's state
        (pending rows, done intervals) changes only once everything is durable."""
        if not self._fds:
            self._ensure_files({layer: int(a.shape[1]) for layer, a in rows.items()})
        segments: list[tuple[int, int, int]] = []  # (row in entry, row in batch, count)
        pending = [list(iv) for iv in self._pending]
        k = 0
        while k < b:
            a, e = pending[0]
            n = min(e - a, b - k)
            segments.append((a, k, n))
            k += n
            if a + n == e:
                pending.pop(0)
            else:
                pending[0] = [a + n, e]
        for layer, y in rows.items():
            fd, row_bytes = self._fds[layer], self.dims[layer] * _DTYPE.itemsize
            try:
                for row, k, n in segments:
                    data = y[k : k + n].data.cast("B")
                    pos = self._offsets[layer] + row * row_bytes
                    while data:
                        w = os.pwrite(fd, data, pos)
                        data, pos = data[w:], pos + w
                if self.fsync:  # data must be durable before progress says it is there
                    os.fsync(fd)
            except OSError as e:
                e.filename = e.filename or str(self.dir / self._files[layer])
                raise
        seg = [[row, row + n] for row, _, n in segments]
        done, new = _merge(self._done + seg), _merge(self._new + seg)
        old = (self._done, self._new)
        self._done, self._new = done, new
        try:
            self._save_progress()
        except BaseException:
            self._done, self._new = old
            raise
        self._pending = pending

    def copy_rows(
        self,
        src_key: str,
        dst_rows: Sequence[int] | np.ndarray,
        src_rows: Sequence[int] | np.ndarray,
    ) -> int:
        """Reuse rows of another complete entry of the same cache: row ``src_rows[i]`` of every
        layer of ``src_key`` becomes row ``dst_rows[i]`` here (docs/reliability.md, "Adding or
        removing images never recomputes the others").

        Only rows still pending are copied (a resumed writer skips what it has), so the call
        can be repeated after a kill. The source entry is verified first (every file it gives,
        against its checksums, whatever the cache's ``verify`` setting: the copied bytes get
        fresh checksums in this entry, so a corrupt source would otherwise be laundered) and
        read through descriptors opened before verification, so a source removed meanwhile is
        still read whole. Bytes are copied as stored (float16), in runs of consecutive rows,
        then fsync'ed and recorded as done in ``progress.json``, exactly like written batches.

        Args:
            src_key: a complete entry holding (at least) this writer's layers, with checksums.
            dst_rows: (k,) int row indices of this entry.
            src_rows: (k,) int row indices of ``src_key``, aligned with ``dst_rows``.

        Returns:
            The number of rows copied now.

        Raises:
            CacheError: the source is incomplete, lacks a layer, has no checksums, or another
                feature width; a source file does not match its checksum (the source is set
                aside, see :meth:`FeatureCache.verify`; nothing was copied); bad row indices;
                this writer is a shard writer or closed; a read or write failed (one line naming
                the path; rows copied before stay done).
        """
        if self._closed:
            raise CacheError(f"cache writer for {self.key} is closed")
        if self.shard is not None:
            raise CacheError(f"cache entry {self.key}: shard writers do not copy rows")
        cache = self.cache
        dst = np.asarray(dst_rows, dtype=np.int64).reshape(-1)
        src = np.asarray(src_rows, dtype=np.int64).reshape(-1)
        if dst.shape != src.shape:
            raise CacheError(f"copy_rows: {dst.size} destination rows but {src.size} source rows")
        meta = cache.meta(src_key)
        n_src = int(meta["n"])
        if dst.size and (dst.min() < 0 or dst.max() >= self.n_total):
            raise CacheError(f"copy_rows: destination rows outside [0, {self.n_total})")
        if dst.size and (src.min() < 0 or src.max() >= n_src):
            raise CacheError(f"copy_rows: source rows outside [0, {n_src}) of entry {src_key}")
        if np.unique(dst).size != dst.size:
            raise CacheError("copy_rows: a destination row is given twice")
        pending = np.zeros(self.n_total, dtype=bool)
        for a, b in self._pending:
            pending[a:b] = True
        keep = pending[dst]
        dst, src = dst[keep], src[keep]
        if not dst.size:
            return 0
        order = np.argsort(dst, kind="stable")
        dst, src = dst[order], src[order]
        stored = [_norm_layer(x) for x in meta["layers"]]
        missing = [x for x in self.layers if x not in stored]
        if missing:
            raise CacheError(f"cache entry {src_key} lacks layers {missing}; it cannot be reused")
        if self._checksums_missing(meta):
            raise CacheError(f"cache entry {src_key} has no checksums: its rows are not reused")
        entry = cache.entry_dir(src_key)
        fds: dict[LayerId, int] = {}
        try:
            try:
                geometry: dict[LayerId, tuple[int, int]] = {}  # layer -> (D, data offset)
                for layer in self.layers:
                    path = entry / meta["files"][stored.index(layer)]
                    fds[layer] = os.open(path, os.O_RDONLY)
                    shape, dtype, offset = _npy_info(path)
                    if len(shape) != 2 or shape[0] != n_src or dtype != _DTYPE:
                        raise CacheError(f"{path}: shape {shape} {dtype}, meta.json says "
                                         f"({n_src}, D) float16")  # fmt: skip
                    geometry[layer] = (int(shape[1]), offset)
                # verified after opening: what the descriptors read is what was verified
                cache.verify(src_key, self.layers)
                for layer, fd in fds.items():
                    path = entry / meta["files"][stored.index(layer)]
                    st_fd, st_now = os.fstat(fd), os.stat(path)
                    if (st_fd.st_ino, st_fd.st_dev, st_fd.st_size) != (
                        st_now.st_ino,
                        st_now.st_dev,
                        st_now.st_size,
                    ):
                        raise CacheError(f"{path} was replaced while being reused; rerun")
            except OSError as e:
                raise CacheError(
                    f"cannot read cache entry {src_key}: {e.filename or entry}: {e.strerror or e}"
                ) from None
            dims = {layer: d for layer, (d, _) in geometry.items()}
            if not self._fds:
                try:
                    self._ensure_files(dims)
                except OSError as e:
                    raise _io_error(f"cannot write cache entry {self.key}",
                                    e.filename or self.dir, e,
                                    "nothing was copied; free space and rerun"
                                    ) from None  # fmt: skip
            wrong = [x for x in self.layers if self.dims[x] != dims[x]]
            if wrong:
                raise CacheError(
                    f"cache entry {src_key}: feature width of layers {wrong} differs from "
                    f"{self.key}'s; its rows are not reused"
                )
            # runs of rows consecutive in both entries
            cut = np.flatnonzero((np.diff(dst) != 1) | (np.diff(src) != 1)) + 1
            starts = np.concatenate([[0], cut])
            stops = np.concatenate([cut, [dst.size]])
            try:
                for layer in self.layers:
                    d, src_off = geometry[layer]
                    row_bytes = d * _DTYPE.itemsize
                    step = max(1, _CHUNK // row_bytes)
                    out_fd, out_off = self._fds[layer], self._offsets[layer]
                    for i0, i1 in zip(starts.tolist(), stops.tolist(), strict=True):
                        for k in range(i0, i1, step):
                            n = min(step, i1 - k)
                            want = n * row_bytes
                            pos = src_off + int(src[k]) * row_bytes
                            data = os.pread(fds[layer], want, pos)
                            if len(data) != want:
                                raise CacheError(f"{entry}: layer {layer!r} is truncated")
                            view = memoryview(data)
                            pos = out_off + int(dst[k]) * row_bytes
                            while view:
                                w = os.pwrite(out_fd, view, pos)
                                view, pos = view[w:], pos + w
                    if self.fsync:
                        os.fsync(out_fd)
                seg = [[int(dst[a]), int(dst[b - 1]) + 1]
                       for a, b in zip(starts.tolist(), stops.tolist(), strict=True)]  # fmt: skip
                old = self._done
                self._done = _merge(self._done + seg)
                try:
                    self._save_progress()
                except BaseException:
                    self._done = old
                    raise
            except OSError as e:
                self._close_fds()
                self._closed = True
                raise _io_error(
                    f"cannot copy rows of cache entry {src_key} into {self.key}",
                    e.filename or self.dir,
                    e,
                    f"the {self.n_done} rows done before are kept in {self.dir}: free space (or "
                    "fix the disk) and rerun to resume from there",
                ) from None
        finally:
            for fd in fds.values():
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._pending = _gaps(self.rows[0], self.rows[1], self._done)
        return int(dst.size)

    @staticmethod
    def _checksums_missing(meta: Mapping[str, Any]) -> bool:
        return FeatureCache._checksums(meta) is None

    def finalize(self) -> Path:
        """Checksum the layer files, write ids.txt and meta.json, rename the partial dir to
        ``root/<key>``, then remove the progress files.

        Only the coordinator finalizes, after every shard writer has finished: rows recorded
        by the shard writers' ``done-*.json`` count as written.

        Crash safety: ``progress.json`` and the shard files stay in the partial directory until
        it has been renamed into place, so a kill at any step either leaves a partial entry
        that the next writer resumes with every row done (it only finalizes again) or the
        complete entry (stray progress files inside it are harmless and removed here).

        Returns:
            The entry directory ``root/<key>``.

        Raises:
            CacheError: rows are missing; the entry was completed by someone else (the lock
                was not held); the writer is a shard writer or closed; a write failed (disk
                full, I/O error: one line naming the path; every row stays in the partial
                entry, and a rerun only finalizes).
        """
        if self._closed:
            raise CacheError(f"cache writer for {self.key} is closed")
        if self.shard is not None:
            raise CacheError(
                f"cache entry {self.key}: shard writer {self.shard} cannot finalize; the "
                "coordinator does, once every shard is written"
            )
        done = _merge(self._done + self._shard_files_done())
        if _covered(done) != self.n_total:
            raise CacheError(
                f"cache entry {self.key}: cannot finalize, "
                f"{_covered(done)}/{self.n_total} rows written"
            )
        final = self.cache.entry_dir(self.key)
        if self.cache.is_complete(self.key):
            raise CacheError(f"cache entry {self.key} was completed concurrently at {final}")
        try:
            return self._finalize(final)
        except OSError as e:
            self._close_fds()
            raise _io_error(
                f"cannot finalize cache entry {self.key}",
                e.filename or self.dir,
                e,
                f"all {self.n_total} rows are kept in {self.dir}: free space (or fix the disk) "
                "and rerun; nothing is recomputed",
            ) from None

    def _finalize(self, final: Path) -> Path:
        if not self._fds:  # shard writers wrote everything: learn the widths from the files
            self.dims = {x: int(_npy_info(self.dir / f)[0][1]) for x, f in self._files.items()}
            self._open_fds()
        for fd in self._fds.values():  # the complete entry is always durable
            os.fsync(fd)
        self._close_fds()
        ids_text = "".join(f"{x}\n" for x in self._ids)
        algorithm = default_checksum()
        h = _hasher(algorithm)
        h.update(ids_text.encode("utf-8"))
        sums = {_IDS_FILE: h.hexdigest()}
        digests_text = None
        if self._digests is not None:
            digests_text = "".join(f"{x}\n" for x in self._digests)
            h = _hasher(algorithm)
            h.update(digests_text.encode("utf-8"))
            sums[_DIGESTS_FILE] = h.hexdigest()
        for layer in self.layers:
            sums[self._files[layer]] = _file_digest(self.dir / self._files[layer], algorithm)
        meta = {
            "format_version": CACHE_FORMAT_VERSION,
            "key": self.key,
            "n": self.n_total,
            "dtype": "float16",
            "layers": self.layers,
            "dims": [self.dims[x] for x in self.layers],
            "files": [self._files[x] for x in self.layers],
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "checksums": {"algorithm": algorithm, "files": sums},
            "all_finite": True,  # write() refuses non-finite rows, in every process
            "spec": self._spec,
        }
        _write_file_durable(self.dir / _IDS_FILE, ids_text)
        if digests_text is not None:
            _write_file_durable(self.dir / _DIGESTS_FILE, digests_text)
        _write_file_durable(self.dir / "meta.json", json.dumps(meta, indent=1) + "\n")
        _fsync_dir(self.dir)
        if final.exists():  # an incomplete leftover (no meta.json): garbage
            shutil.rmtree(final)
        os.replace(self.dir, final)
        _fsync_dir(self.cache.root)
        self._closed = True
        # The entry is complete: the progress files inside it are now only clutter.
        for name in ("progress.json", "alloc.lock"):
            with contextlib.suppress(OSError):
                (final / name).unlink(missing_ok=True)
        for p in final.glob(f"{_SHARD_PREFIX}*.json"):
            with contextlib.suppress(OSError):
                p.unlink(missing_ok=True)
        # The bytes were hashed just now: this process need not hash them again on load.
        with _VERIFIED_LOCK, contextlib.suppress(OSError):
            for name, digest in sums.items():
                _VERIFIED.add(_verified_token(final / name, digest))
        return final

    def close(self) -> None:
        """Release file handles without finalizing; the partial stays resumable."""
        self._close_fds()
        self._closed = True

    def __enter__(self) -> CacheWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._closed:
            self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self._close_fds()


# --------------------------------------------------------------------------------------------
# row intervals ([start, stop) lists, merged and sorted)


def _merge(intervals: Iterable[Sequence[int]]) -> list[list[int]]:
    """Sorted, non-overlapping, non-adjacent intervals covering the same rows."""
    out: list[list[int]] = []
    for a, b in sorted((int(a), int(b)) for a, b in intervals if int(b) > int(a)):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return out


def _clip(done: Sequence[Sequence[int]], lo: int, hi: int) -> list[list[int]]:
    return _merge([max(a, lo), min(b, hi)] for a, b in done)


def _covered(done: Sequence[Sequence[int]]) -> int:
    return sum(b - a for a, b in _merge(done))


def _gaps(lo: int, hi: int, done: Sequence[Sequence[int]]) -> list[list[int]]:
    """The parts of [lo, hi) not covered by ``done``, in order."""
    gaps: list[list[int]] = []
    pos = lo
    for a, b in _merge(done):
        if b <= pos:
            continue
        if a >= hi:
            break
        if a > pos:
            gaps.append([pos, a])
        pos = b
    if pos < hi:
        gaps.append([pos, hi])
    return gaps


def _check_intervals(done: Any, n_total: int) -> list[list[int]]:
    """Validate ``[[start, stop], ...]`` from a progress file (ValueError if malformed)."""
    if not isinstance(done, list):
        raise ValueError("done intervals must be a list")
    out = []
    for iv in done:
        a, b = (int(iv[0]), int(iv[1]))
        if len(iv) != 2 or not 0 <= a <= b <= n_total:
            raise ValueError(f"bad interval {iv!r}")
        out.append([a, b])
    return _merge(out)
