"""Reliability promises of the feature cache, medprobe/cache.py (issue 14; docs/reliability.md
lists each one).

Integrity (14.1), finalise crash safety (14.6), disk full and I/O errors (14.7), non-finite
cached values (14.8) and a cache shared by a lab (14.12). Each test first reproduces the fault
(a tampered file, a kill at each step of finalize, an injected ENOSPC, ...) and then checks the
promise: one CacheError line naming the file, nothing recomputed, nothing left truncated.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import pathlib
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import medprobe.cache as cache_mod
from medprobe.cache import CacheError, FeatureCache, cache_key

N, BS = 30, 8  # four batches, the last one short (6 rows)
LAYERS = [1, 5, "pooled"]
DIMS = {1: 12, 5: 20, "pooled": 4}
IDS = [f"site_{i % 3}/img_{i:03d}.png" for i in range(N)]
SPEC = {"model": "tiny", "layers": [1, 5]}
KEY = cache_key(SPEC)


def batch(i: int) -> dict:
    rng = np.random.default_rng(100 + i)
    b = min(BS, N - i * BS)
    return {layer: rng.standard_normal((b, d)).astype(np.float32) for layer, d in DIMS.items()}


def expected(layer) -> np.ndarray:
    return np.concatenate([batch(i)[layer] for i in range(4)]).astype(np.float16)


def write_all(cache: FeatureCache, finalize: bool = True):
    w = cache.writer(KEY, IDS, LAYERS, SPEC)
    for i in range(w.n_done // BS, 4):
        w.write(batch(i))
    if finalize:
        w.finalize()
    return w


def assert_entry_values(cache: FeatureCache) -> None:
    assert cache.is_complete(KEY) and cache.ids(KEY) == IDS
    for layer in LAYERS:
        np.testing.assert_array_equal(cache.load(KEY, layer), expected(layer))


@pytest.fixture(autouse=True)
def _new_process() -> Iterator[None]:
    """Each test starts as a fresh process would: nothing verified yet."""
    cache_mod._VERIFIED.clear()
    cache_mod._UNVERIFIED_NOTED.clear()
    yield
    cache_mod._VERIFIED.clear()


def _one_line(e: pytest.ExceptionInfo[CacheError]) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


# --------------------------------------------------------------------------------------------
# 14.1 integrity: checksums recorded at finalize, verified once per file per process


def test_meta_records_a_checksum_of_every_file(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path)
    write_all(cache)
    meta = cache.meta(KEY)
    sums = meta["checksums"]
    assert sums["algorithm"] == "xxh3_128" and meta["all_finite"] is True
    assert set(sums["files"]) == {"ids.txt", *meta["files"]}
    # the recorded digest is the digest of the whole file
    entry = cache.entry_dir(KEY)
    for name, digest in sums["files"].items():
        assert cache_mod._file_digest(entry / name, "xxh3_128") == digest
    # the finished entry holds no progress files
    assert sorted(p.name for p in entry.iterdir()) == sorted(
        ["ids.txt", "meta.json", *meta["files"]]
    )


def test_zeroed_rows_of_a_layer_are_detected_and_the_entry_set_aside(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path)
    write_all(cache)
    path = cache.entry_dir(KEY) / cache.meta(KEY)["files"][1]  # layer 5
    offset = cache_mod._npy_info(path)[2]
    with open(path, "r+b") as f:  # zero ten rows, as the reproduction did
        f.seek(offset + 3 * DIMS[5] * 2)
        f.write(b"\0" * (10 * DIMS[5] * 2))
    cache_mod._VERIFIED.clear()  # a new process
    assert cache.ids(KEY) == IDS  # ids.txt is intact
    np.testing.assert_array_equal(cache.load(KEY, 1), expected(1))  # so is layer 1
    with pytest.raises(CacheError) as e:
        cache.load(KEY, 5)
    msg = _one_line(e)
    assert str(path) in msg and "does not match the checksum" in msg
    assert "set aside as" in msg and "not deleted" in msg
    # set aside, not deleted; the next run sees a miss and recomputes
    assert not cache.is_complete(KEY) and cache.keys() == []
    (aside,) = cache.corrupt_entries()
    assert aside.name.startswith(f"{KEY}.corrupt-")
    assert (aside / path.name).is_file() and (aside / "meta.json").is_file()
    write_all(cache)
    assert_entry_values(cache)
    assert cache.keys() == [KEY]


def test_swapped_id_lines_are_detected(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path)
    write_all(cache)
    ids_path = cache.entry_dir(KEY) / "ids.txt"
    lines = ids_path.read_text().splitlines()
    lines[0], lines[1] = lines[1], lines[0]
    ids_path.write_text("\n".join(lines) + "\n")
    with pytest.raises(CacheError) as e:
        cache.ids(KEY)
    assert str(ids_path) in _one_line(e)
    assert not cache.is_complete(KEY) and len(cache.corrupt_entries()) == 1


@pytest.mark.parametrize("text", ["{garbage", '{"n": 3}', ""])
def test_a_damaged_meta_json_sets_the_entry_aside(tmp_path: Path, text: str) -> None:
    """meta.json holds the checksums, so nothing verifies it; a damaged one used to stop every
    run on the entry ("cannot read .../meta.json") and never let it be recomputed."""
    cache = FeatureCache(tmp_path)
    write_all(cache)
    meta_path = cache.entry_dir(KEY) / "meta.json"
    meta_path.write_text(text)
    # listing (``medprobe cache list``) changes nothing
    with pytest.raises(CacheError, match="cannot read|is not a medprobe cache meta file"):
        cache.meta(KEY, set_aside=False)
    assert cache.is_complete(KEY) and cache.corrupt_entries() == []
    with pytest.raises(CacheError) as e:
        cache.meta(KEY)
    line = _one_line(e)
    assert line.startswith(f"cache entry {KEY}: {meta_path} is ")
    assert line.endswith("(not deleted); the next run recomputes it")
    assert not cache.is_complete(KEY) and len(cache.corrupt_entries()) == 1
    write_all(cache)  # the next run recomputes it
    assert cache.meta(KEY)["n"] > 0


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        ("delete", "is missing"),
        ("header", "is truncated or not a .npy file (EOF: reading array header"),
        ("rows", "is truncated or not a .npy file (mmap length is greater than file size)"),
    ],
)
@pytest.mark.parametrize("verify", [True, False])
def test_a_missing_or_truncated_layer_sets_the_entry_aside(
    tmp_path: Path, damage: str, problem: str, verify: bool
) -> None:
    """Such a layer said "cannot load layer ..." on every run and was never recomputed."""
    cache = FeatureCache(tmp_path, verify=verify)
    write_all(cache)
    path = cache.entry_dir(KEY) / "layer_005.npy"
    if damage == "delete":
        path.unlink()
    else:
        size = 100 if damage == "header" else path.stat().st_size - 40
        os.truncate(path, size)
    with pytest.raises(CacheError) as e:
        cache.load(KEY, 5)
    line = _one_line(e)
    assert line.startswith(f"cache entry {KEY}: {path} {problem}")
    assert line.endswith("(not deleted); the next run recomputes it")
    assert not cache.is_complete(KEY) and len(cache.corrupt_entries()) == 1


@pytest.mark.parametrize("name", ["layer_001.npy", "ids.txt", "digests.txt"])
def test_verify_sets_an_entry_with_a_missing_file_aside(tmp_path: Path, name: str) -> None:
    cache = FeatureCache(tmp_path)
    w = cache.writer(KEY, IDS, LAYERS, SPEC, digests=[f"d{i}" for i in range(N)])
    for i in range(4):
        w.write(batch(i))
    w.finalize()
    path = cache.entry_dir(KEY) / name
    path.unlink()
    with pytest.raises(CacheError, match=f"{path} is missing; the entry was set aside"):
        cache.verify(KEY)
    assert not cache.is_complete(KEY)


def test_ids_that_disagree_with_meta_set_the_entry_aside(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path, verify=False)  # no checksum to catch it first
    write_all(cache)
    path = cache.entry_dir(KEY) / "ids.txt"
    path.write_text("\n".join(IDS[:-1]) + "\n")
    with pytest.raises(CacheError, match=f"{path} has {N - 1} ids but meta.json says n={N};"):
        cache.ids(KEY)
    assert not cache.is_complete(KEY) and len(cache.corrupt_entries()) == 1


def test_each_file_is_hashed_once_per_process(tmp_path: Path, monkeypatch) -> None:
    cache = FeatureCache(tmp_path)
    write_all(cache)
    cache_mod._VERIFIED.clear()
    calls: list[str] = []
    real = cache_mod._array_file_digest

    def counting(path, arr, offset, algorithm):  # type: ignore[no-untyped-def]
        calls.append(Path(path).name)
        return real(path, arr, offset, algorithm)

    monkeypatch.setattr(cache_mod, "_array_file_digest", counting)
    for _ in range(3):
        cache.load(KEY, 1)
        FeatureCache(tmp_path).load(KEY, 1)
    assert calls == ["layer_001.npy"]
    # a file changed after verification (new mtime) is hashed again
    path = cache.entry_dir(KEY) / "layer_001.npy"
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    cache.load(KEY, 1)
    assert calls == ["layer_001.npy", "layer_001.npy"]


def test_verify_whole_entry_and_switch_off(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path)
    write_all(cache)
    cache_mod._VERIFIED.clear()
    report = cache.verify(KEY)
    assert report == {
        "verified": True,
        "algorithm": "xxh3_128",
        "files": ["ids.txt", "layer_001.npy", "layer_005.npy", "layer_pooled.npy"],
    }
    path = cache.entry_dir(KEY) / "layer_pooled.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # one flipped bit
    path.write_bytes(bytes(data))
    # cache.verify=false: the files are trusted, the change goes unnoticed (documented)
    unchecked = FeatureCache(tmp_path, verify=False)
    assert unchecked.load(KEY, "pooled").shape == (N, DIMS["pooled"])
    assert cache.load(KEY, "pooled", verify=False).shape == (N, DIMS["pooled"])
    with pytest.raises(CacheError, match="layer_pooled.npy does not match"):
        cache.verify(KEY)


def test_sha256_where_xxhash_is_missing(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(cache_mod, "default_checksum", lambda: "sha256")
    cache = FeatureCache(tmp_path)
    write_all(cache)
    assert cache.meta(KEY)["checksums"]["algorithm"] == "sha256"
    cache_mod._VERIFIED.clear()
    assert cache.verify(KEY)["verified"] is True
    assert_entry_values(cache)


def test_entries_written_before_checksums_are_read_unverified(tmp_path: Path, caplog) -> None:
    cache = FeatureCache(tmp_path)
    write_all(cache)
    meta_path = cache.entry_dir(KEY) / "meta.json"
    meta = json.loads(meta_path.read_text())
    del meta["checksums"], meta["all_finite"]
    meta_path.write_text(json.dumps(meta))
    cache_mod._VERIFIED.clear()
    with caplog.at_level(logging.WARNING, logger="medprobe.cache"):
        assert_entry_values(cache)
        cache.load(KEY, 5)
    notes = [r.getMessage() for r in caplog.records if "before medprobe recorded" in r.message]
    assert len(notes) == 1 and KEY in notes[0]  # said once per entry per process
    assert cache.verify(KEY)["verified"] is False
    assert "cannot be verified" in cache.verify(KEY)["reason"]


# --------------------------------------------------------------------------------------------
# 14.6 a kill at any step of finalize either resumes (no row recomputed) or finds the entry


class _Killed(BaseException):
    """Stands for SIGKILL: not an Exception, so no ``except OSError`` cleanup catches it."""


_KILL_POINTS = (
    (os, "fsync"),
    (os, "replace"),
    (os, "write"),
    (cache_mod, "_write_file_durable"),
    (cache_mod, "_file_digest"),
    (cache_mod, "_fsync_dir"),
    (shutil, "rmtree"),
    (pathlib.Path, "unlink"),
)


def _finalize_killed_at(tmp_path: Path, monkeypatch, k: int) -> bool:
    """Run finalize, raising _Killed at the k-th call of any step; True if it was killed."""
    cache = FeatureCache(tmp_path)
    w = write_all(cache, finalize=False)
    calls = [0]
    with monkeypatch.context() as m:
        for owner, name in _KILL_POINTS:
            real = getattr(owner, name)

            def step(*args, _real=real, **kwargs):  # type: ignore[no-untyped-def]
                calls[0] += 1
                if calls[0] == k:
                    raise _Killed
                return _real(*args, **kwargs)

            m.setattr(owner, name, step)
        try:
            w.finalize()
        except _Killed:
            return True
    return False


def test_kill_at_every_step_of_finalize_resumes_or_finds_the_entry(
    tmp_path: Path, monkeypatch
) -> None:
    killed_at = 0
    for k in range(1, 200):
        root = tmp_path / f"k{k}"
        killed = _finalize_killed_at(root, monkeypatch, k)
        cache_mod._VERIFIED.clear()
        cache = FeatureCache(root)
        if not cache.is_complete(KEY):
            w = cache.writer(KEY, IDS, LAYERS, SPEC)
            # every row survived: nothing is recomputed, finalize runs again
            assert w.n_done == N and w.resumed and w.pending_rows().size == 0, f"kill point {k}"
            w.finalize()
        assert_entry_values(cache)
        assert cache.verify(KEY)["verified"] is True
        if not killed:
            break
        killed_at = k
    assert killed_at >= 15  # every step was tried (fsyncs, digests, writes, rename, cleanup)


# --------------------------------------------------------------------------------------------
# 14.7 disk full / I/O errors: one line naming the path and what is kept; nothing truncated


def _enospc(*args, **kwargs):  # type: ignore[no-untyped-def]
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_disk_full_while_writing_rows_keeps_the_rows_before(tmp_path: Path, monkeypatch) -> None:
    cache = FeatureCache(tmp_path)
    w = cache.writer(KEY, IDS, LAYERS, SPEC)
    w.write(batch(0))
    w.write(batch(1))
    with monkeypatch.context() as m:
        m.setattr(os, "pwrite", _enospc)
        with pytest.raises(CacheError) as e:
            w.write(batch(2))
    msg = _one_line(e)
    assert msg.startswith(f"cannot write cache entry {KEY}: ")
    assert "layer_001.npy: no space left on device" in msg
    assert f"the {2 * BS} rows written before are kept in {cache.partial_dir(KEY)}" in msg
    with pytest.raises(CacheError, match="closed"):  # a broken writer writes nothing more
        w.write(batch(2))
    w2 = write_all(cache)  # rerun: resumes after the rows kept
    assert w2.resumed and not cache.partial_dir(KEY).exists()
    assert_entry_values(cache)


def test_disk_full_while_saving_progress_leaves_no_temp_file(tmp_path: Path, monkeypatch) -> None:
    cache = FeatureCache(tmp_path)
    w = cache.writer(KEY, IDS, LAYERS, SPEC)
    w.write(batch(0))
    real_write = os.write

    def full(fd: int, data) -> int:  # type: ignore[no-untyped-def]
        if fd > 2:
            _enospc()
        return real_write(fd, data)

    with monkeypatch.context() as m:
        m.setattr(os, "write", full)
        with pytest.raises(CacheError) as e:
            w.write(batch(1))
    assert "progress.json: no space left on device" in _one_line(e)
    part = cache.partial_dir(KEY)
    assert not list(part.glob(".*.tmp"))  # no half-written temp file left
    assert json.loads((part / "progress.json").read_text())["n_done"] == BS  # old, valid
    assert cache.writer(KEY, IDS, LAYERS, SPEC).n_done == BS


def test_disk_full_while_finalizing_keeps_every_row(tmp_path: Path, monkeypatch) -> None:
    cache = FeatureCache(tmp_path)
    w = write_all(cache, finalize=False)
    real = cache_mod._write_file_durable

    def full_on_meta(path: Path, text: str, fsync: bool = True) -> None:
        if path.name == "meta.json":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real(path, text, fsync)

    with monkeypatch.context() as m:
        m.setattr(cache_mod, "_write_file_durable", full_on_meta)
        with pytest.raises(CacheError) as e:
            w.finalize()
    msg = _one_line(e)
    assert f"cannot finalize cache entry {KEY}: " in msg and "meta.json: no space left" in msg
    assert f"all {N} rows are kept in {cache.partial_dir(KEY)}" in msg
    assert not cache.is_complete(KEY) and not cache.entry_dir(KEY).exists()
    w2 = cache.writer(KEY, IDS, LAYERS, SPEC)
    assert w2.n_done == N
    w2.finalize()
    assert_entry_values(cache)


def test_disk_full_when_creating_an_entry(tmp_path: Path, monkeypatch) -> None:
    cache = FeatureCache(tmp_path)
    with monkeypatch.context() as m:
        m.setattr(cache_mod, "_write_file_durable", _enospc)
        with pytest.raises(CacheError) as e:
            cache.writer(KEY, IDS, LAYERS, SPEC)
    assert f"cannot create cache entry {KEY}" in _one_line(e)
    assert "no space left on device" in str(e.value)


# --------------------------------------------------------------------------------------------
# 14.8 non-finite values in a cached layer: one line naming the layer and rows


def _legacy_entry_with_nan(cache: FeatureCache, rows: list[int]) -> None:
    """An entry as older medprobe versions could leave it: NaN rows, no checksums."""
    write_all(cache)
    entry = cache.entry_dir(KEY)
    path = entry / "layer_005.npy"
    mm = np.load(path, mmap_mode="r+")
    mm[rows, 3] = np.nan
    mm[rows[-1], 0] = np.inf
    mm.flush()
    del mm
    meta = json.loads((entry / "meta.json").read_text())
    del meta["checksums"], meta["all_finite"]
    (entry / "meta.json").write_text(json.dumps(meta))
    cache_mod._VERIFIED.clear()


def test_check_finite_names_layer_and_first_rows(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path)
    bad = [2, 4, 9, 11, 17, 25, 29]
    _legacy_entry_with_nan(cache, bad)
    cache.check_finite(KEY, 1)  # another layer is fine
    cache.check_finite(KEY, 5, rows=[0, 1, 3, 5])  # so are rows without NaN
    with pytest.raises(CacheError) as e:
        cache.check_finite(KEY, "5")
    msg = _one_line(e)
    shown = ", ".join(IDS[r] for r in bad[:5])
    assert msg.startswith(f"layer 5 of cache entry {KEY} holds NaN/inf in 7 of {N} rows ")
    assert f"(ids {shown}, ...)" in msg and str(cache.entry_dir(KEY)) in msg
    with pytest.raises(CacheError, match=rf"in 2 of 3 rows \(ids {IDS[4]}, {IDS[29]}\)"):
        cache.check_finite(KEY, 5, rows=np.array([29, 4, 0]))
    with pytest.raises(CacheError, match="outside"):
        cache.check_finite(KEY, 5, rows=[N])


def test_check_finite_of_a_verified_entry_needs_no_scan(tmp_path: Path, monkeypatch) -> None:
    cache = FeatureCache(tmp_path)
    write_all(cache)
    cache_mod._VERIFIED.clear()
    cache.load(KEY, 5)  # verified

    def no_scan(*a, **k):  # type: ignore[no-untyped-def]
        raise AssertionError("scanned a verified, finite-by-construction layer")

    monkeypatch.setattr(np, "unique", no_scan)
    cache.check_finite(KEY, 5)


# --------------------------------------------------------------------------------------------
# 14.12 a cache shared by a lab: files 0o666 & ~umask, dirs 0o777 & ~umask, shared locks


@pytest.fixture
def umask():  # type: ignore[no-untyped-def]
    old = os.umask(0o022)
    os.umask(old)

    def set_umask(mask: int) -> None:
        os.umask(mask)

    yield set_umask
    os.umask(old)


@pytest.mark.parametrize(
    ("mask", "file_mode", "dir_mode", "lock_mode"),
    [
        (0o022, 0o644, 0o755, 0o666),
        (0o002, 0o664, 0o775, 0o666),
        (0o027, 0o640, 0o750, 0o660),
        (0o077, 0o600, 0o700, 0o600),
    ],
)
def test_modes_follow_the_umask(
    tmp_path: Path, umask, mask: int, file_mode: int, dir_mode: int, lock_mode: int
) -> None:
    umask(mask)
    root = tmp_path / "cache"
    cache = FeatureCache(root)
    with cache.lock(KEY):
        w = cache.writer(KEY, IDS, LAYERS, SPEC)
        w.write(batch(0))
        part = cache.partial_dir(KEY)
        assert stat.S_IMODE((part / "progress.json").stat().st_mode) == file_mode
        assert stat.S_IMODE((part / "alloc.lock").stat().st_mode) == lock_mode
        for i in range(1, 4):
            w.write(batch(i))
        w.finalize()
    entry = cache.entry_dir(KEY)
    assert stat.S_IMODE(entry.stat().st_mode) == dir_mode
    for p in entry.iterdir():  # meta.json and ids.txt were owner-only (tempfile.mkstemp)
        assert stat.S_IMODE(p.stat().st_mode) == file_mode, p.name
    assert stat.S_IMODE(cache.lock_path(KEY).stat().st_mode) == lock_mode


def _as_other_user(uid: int, gid: int, root: Path) -> str:
    """Fork, drop to ``uid`` (groups: ``gid``), read the entry and take its lock; returns the
    child's report. Forking keeps the imported modules: the other account need not be able
    to read this interpreter's files."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            os.close(r)
            os.setgroups([gid])
            os.setgid(gid)
            os.setuid(uid)
            cache_mod._VERIFIED.clear()
            cache = FeatureCache(root)
            with cache.lock(KEY, timeout=5):
                report = f"{len(cache.ids(KEY))} {cache.load(KEY, 5).shape[1]} "
                report += str(cache.verify(KEY)["verified"])
            os.write(w, report.encode())
            code = 0
        except BaseException as e:  # report anything to the parent
            os.write(w, f"{type(e).__name__}: {e}".encode())
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        out = f.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, out
    return out


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to act as another user"
)
def test_another_user_of_the_group_reads_and_locks(umask) -> None:
    """A second account of the group reads a finished entry and takes its lock (umask 022:
    the entry is group-readable, the lock file group-writable)."""
    umask(0o022)
    top = Path(tempfile.mkdtemp(prefix="medprobe-shared-"))
    try:
        top.chmod(0o755)
        root = top / "cache"
        cache = FeatureCache(root)
        with cache.lock(KEY):
            write_all(cache)
        cache_mod._VERIFIED.clear()
        cache.verify(KEY)  # imports everything the child needs before it forks
        assert _as_other_user(65534, 0, root).split() == [str(N), str(DIMS[5]), "True"]
    finally:
        shutil.rmtree(top, ignore_errors=True)
