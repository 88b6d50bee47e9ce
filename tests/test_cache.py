"""Tests of medprobe.cache: keys, streamed writes, resume after SIGKILL, locking, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import filelock
import numpy as np
import pytest
from helpers import REPO

from medprobe.cache import CacheError, FeatureCache, cache_key, sort_layers
from medprobe.extractors.base import layer_filename

# Deterministic synthetic data, shared verbatim by this module and its child processes.
GEN_SRC = textwrap.dedent(
    """
    import numpy as np

    N_BATCHES, BS = 5, 7
    N = N_BATCHES * BS - 3          # the last batch is short: 4 rows
    LAYERS = [2, 10, 1, "pooled"]
    DIMS = {1: 16, 2: 16, 10: 24, "pooled": 8}
    IDS = [f"patient_{i // 3}/img_{i:04d}.png" for i in range(N)]
    SPEC = {"model": "tiny", "revision": "abc", "dtype": "float32", "layers": [1, 2, 10]}

    def batch(i):
        rng = np.random.default_rng(1000 + i)
        b = min(BS, N - i * BS)
        return {layer: (rng.standard_normal((b, d)) * 100).astype(np.float32)
                for layer, d in DIMS.items()}
    """
)
_gen: dict = {}
exec(GEN_SRC, _gen)
N, BS, N_BATCHES = _gen["N"], _gen["BS"], _gen["N_BATCHES"]
LAYERS, DIMS, IDS, SPEC, batch = (
    _gen["LAYERS"],
    _gen["DIMS"],
    _gen["IDS"],
    _gen["SPEC"],
    _gen["batch"],
)


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _run_child(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", GEN_SRC + textwrap.dedent(code), *args],
        env=_child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _write_all(cache: FeatureCache, key: str) -> Path:
    w = cache.writer(key, IDS, LAYERS, SPEC)
    for i in range(N_BATCHES):
        w.write(batch(i))
    return w.finalize()


def _expected(layer) -> np.ndarray:
    return np.concatenate([batch(i)[layer] for i in range(N_BATCHES)]).astype(np.float16)


# ------------------------------------------------------------------------------------- keys


def test_key_is_order_independent_and_sensitive_to_every_field():
    spec = {
        "model": {"id": "HuggingFaceM4/idefics-9b", "revision": "r1"},
        "dtype": "bfloat16",
        "prompt": "User: <image> Which tissue?\nAssistant:",
        "manifest": {"ids": ["a/1.png", "b/2.png"], "sha256": "00ff"},
        "layers": [8, 16],
    }
    reordered = dict(reversed(list(spec.items())))
    reordered["model"] = {"revision": "r1", "id": "HuggingFaceM4/idefics-9b"}
    key = cache_key(spec)
    assert key == cache_key(reordered)
    assert len(key) == 64 and int(key, 16) >= 0

    changed = [
        {**spec, "prompt": spec["prompt"] + " "},
        {**spec, "dtype": "float16"},
        {**spec, "manifest": {"ids": ["a/1.png", "b/3.png"], "sha256": "00ff"}},
        {**spec, "manifest": {"ids": ["b/2.png", "a/1.png"], "sha256": "00ff"}},
        {**spec, "layers": [8, 17]},
        {**spec, "model": {"id": "HuggingFaceM4/idefics-9b", "revision": "r2"}},
    ]
    keys = {cache_key(s) for s in changed}
    assert key not in keys and len(keys) == len(changed)


@pytest.mark.parametrize(
    "bad",
    [
        {"path": Path("/x")},
        {"n": np.int64(3)},
        {"s": {1, 2}},
        {"f": float("nan")},
        {"nested": {1: "int key"}},
        {"obj": object()},
    ],
)
def test_key_rejects_non_json(bad):
    with pytest.raises(TypeError):
        cache_key({"model": "m", **bad})


# ------------------------------------------------------------------------ write / read


def test_miss_write_finalize_hit_values(tmp_path):
    cache = FeatureCache(tmp_path / "c")
    key = cache_key(SPEC)
    assert not cache.is_complete(key)
    with pytest.raises(CacheError, match=key):
        cache.meta(key)

    w = cache.writer(key, IDS, LAYERS, SPEC)
    assert (w.n_total, w.n_done, w.resumed) == (N, 0, False)
    for i in range(3):
        w.write(batch(i))
        assert w.n_done == min((i + 1) * BS, N)
    assert not cache.is_complete(key)
    with pytest.raises(CacheError, match="cannot finalize"):
        w.finalize()
    for i in range(3, N_BATCHES):
        w.write(batch(i))
    final = w.finalize()

    assert final == cache.entry_dir(key) == tmp_path / "c" / key
    assert cache.is_complete(key) and cache.keys() == [key]
    assert not cache.partial_dir(key).exists()
    assert sorted(p.name for p in final.iterdir()) == sorted(
        ["ids.txt", "meta.json"] + [layer_filename(x) + ".npy" for x in LAYERS]
    )
    assert cache.ids(key) == IDS
    assert cache.layers(key) == [1, 2, 10, "pooled"]
    meta = cache.meta(key)
    assert meta["n"] == N and meta["dtype"] == "float16" and meta["spec"] == SPEC
    assert meta["dims"] == [DIMS[x] for x in [1, 2, 10, "pooled"]] and meta["created"]

    for layer in LAYERS:
        arr = cache.load(key, layer)
        assert isinstance(arr, np.memmap)
        assert arr.dtype == np.float16 and arr.shape == (N, DIMS[layer])
        np.testing.assert_array_equal(arr, _expected(layer))
        assert not arr.flags.writeable
        with pytest.raises(ValueError):
            arr[0, 0] = 1
    np.testing.assert_array_equal(cache.load(key, "10"), _expected(10))  # int given as str

    with pytest.raises(CacheError, match=r"layer 3 .*available layers: \[1, 2, 10, 'pooled'\]"):
        cache.load(key, 3)
    with pytest.raises(CacheError, match="already complete"):
        cache.writer(key, IDS, LAYERS, SPEC)


def test_layers_sorted_numerically_not_lexicographically():
    assert sort_layers([2, 10, 1, "pooled"]) == [1, 2, 10, "pooled"]
    assert sorted(layer_filename(x) for x in [2, 10, 1]) == ["layer_001", "layer_002", "layer_010"]
    assert sort_layers(["embeds", 32, 4, "pooled", 0]) == [0, 4, 32, "embeds", "pooled"]


# ------------------------------------------------------------------------------- resume

_KILL_AFTER_2 = """
import os, signal, sys
from medprobe.cache import FeatureCache, cache_key
cache = FeatureCache(sys.argv[1])
w = cache.writer(cache_key(SPEC), IDS, LAYERS, SPEC, fsync=sys.argv[2] == "1")
for i in range(2):
    w.write(batch(i))
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("fsync", [True, False])
def test_resume_after_sigkill_equals_uninterrupted_run(tmp_path, fsync):
    key = cache_key(SPEC)
    ref = FeatureCache(tmp_path / "ref")
    _write_all(ref, key)

    root = tmp_path / "c"
    p = _run_child(_KILL_AFTER_2, str(root), "1" if fsync else "0")
    _, err = p.communicate(timeout=60)
    assert p.returncode == -9, err
    cache = FeatureCache(root)
    assert not cache.is_complete(key) and cache.partial_dir(key).is_dir()

    w = cache.writer(key, IDS, LAYERS, SPEC, fsync=fsync)
    assert w.resumed and w.n_done == 2 * BS and w.n_remaining == N - 2 * BS
    written = 0
    for i in range(w.n_done // BS, N_BATCHES):
        w.write(batch(i))
        written += 1
    assert written == N_BATCHES - 2
    w.finalize()

    assert cache.ids(key) == ref.ids(key)
    assert cache.layers(key) == ref.layers(key)
    for layer in LAYERS:
        a, b = cache.load(key, layer), ref.load(key, layer)
        assert a.shape == b.shape
        np.testing.assert_array_equal(a, b)
        assert (cache.entry_dir(key) / (layer_filename(layer) + ".npy")).read_bytes() == (
            ref.entry_dir(key) / (layer_filename(layer) + ".npy")
        ).read_bytes()


def test_partial_with_different_ids_is_discarded(tmp_path):
    cache = FeatureCache(tmp_path)
    key = cache_key(SPEC)
    w = cache.writer(key, IDS, LAYERS, SPEC)
    w.write(batch(0))
    w.write(batch(1))
    w.close()

    w = cache.writer(key, IDS, LAYERS, SPEC)  # same ids: resumed
    assert w.resumed and w.n_done == 2 * BS
    w.close()

    other_ids = IDS[:-1] + ["someone/else.png"]
    w = cache.writer(key, other_ids, LAYERS, SPEC)
    assert not w.resumed and w.n_done == 0
    for i in range(N_BATCHES):
        w.write({k: v + 1 for k, v in batch(i).items()})
    w.finalize()
    assert cache.ids(key) == other_ids
    expected = np.concatenate([batch(i)[1] + 1 for i in range(N_BATCHES)]).astype(np.float16)
    np.testing.assert_array_equal(cache.load(key, 1), expected)


def test_partial_with_corrupt_progress_is_discarded(tmp_path):
    cache = FeatureCache(tmp_path)
    key = cache_key(SPEC)
    w = cache.writer(key, IDS, LAYERS, SPEC)
    w.write(batch(0))
    w.close()
    (cache.partial_dir(key) / "progress.json").write_text("{not json")
    w = cache.writer(key, IDS, LAYERS, SPEC)
    assert not w.resumed and w.n_done == 0
    w.close()


# -------------------------------------------------------------------------------- locks


def test_lock_times_out_while_held_by_another_thread(tmp_path):
    cache = FeatureCache(tmp_path)
    key = cache_key(SPEC)
    held, release = threading.Event(), threading.Event()

    def hold():
        with cache.lock(key):
            held.set()
            release.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    try:
        assert held.wait(10)
        with pytest.raises(filelock.Timeout):
            cache.lock(key, timeout=0.2).acquire()
    finally:
        release.set()
        t.join()
    with cache.lock(key, timeout=0.2):  # free again
        pass
    assert cache.lock_path(key) == tmp_path / f"{key}.lock"


_LOCKED_WRITER = """
import sys, time
from pathlib import Path
from medprobe.cache import FeatureCache, cache_key
root, name = Path(sys.argv[1]), sys.argv[2]
cache = FeatureCache(root)
key = cache_key(SPEC)
(root / f"waiting-{name}").touch()
with cache.lock(key, timeout=60):
    if cache.is_complete(key):
        print("skipped")
    else:
        # hold the lock until the other process is certainly waiting on it
        deadline = time.time() + 20
        while len(list(root.glob("waiting-*"))) < 2 and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)
        w = cache.writer(key, IDS, LAYERS, SPEC)
        for i in range(N_BATCHES):
            w.write(batch(i))
        w.finalize()
        (root / f"wrote-{name}").touch()
        print("wrote")
"""


def test_two_processes_one_writer(tmp_path):
    root = tmp_path / "c"
    root.mkdir()
    procs = {name: _run_child(_LOCKED_WRITER, str(root), name) for name in ("a", "b")}
    outs = {}
    for name, p in procs.items():
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        outs[name] = out.strip()
    assert sorted(outs.values()) == ["skipped", "wrote"], outs
    writers = sorted(p.name for p in root.glob("wrote-*"))
    assert len(writers) == 1
    cache = FeatureCache(root)
    key = cache_key(SPEC)
    assert cache.keys() == [key] and not cache.partial_dir(key).exists()
    for layer in LAYERS:
        np.testing.assert_array_equal(cache.load(key, layer), _expected(layer))


# ------------------------------------------------------------------------------- errors


def test_float16_overflow_names_layer_and_writes_nothing(tmp_path):
    cache = FeatureCache(tmp_path)
    key = cache_key(SPEC)
    w = cache.writer(key, IDS, LAYERS, SPEC)
    w.write(batch(0))
    bad = batch(1)
    bad[10][3, 5] = 70000.0
    with pytest.raises(CacheError, match=r"layer 10: max \|x\| = 70000 overflows float16"):
        w.write(bad)
    bad = batch(1)
    bad["pooled"][0, 0] = np.nan
    with pytest.raises(CacheError, match="layer 'pooled': non-finite"):
        w.write(bad)
    ok = batch(1)
    ok[2][0, 0] = 65504.0  # the largest float16 is fine
    w.write(ok)
    assert w.n_done == 2 * BS
    w.close()
    assert json.loads((cache.partial_dir(key) / "progress.json").read_text())["n_done"] == 2 * BS


def test_bad_batches_raise(tmp_path):
    cache = FeatureCache(tmp_path)
    key = cache_key(SPEC)
    w = cache.writer(key, IDS, LAYERS, SPEC)
    b = batch(0)
    b[10] = b[10][:-1]
    with pytest.raises(CacheError, match=r"layer 10: batch has 6 rows but layer 1 has 7"):
        w.write(b)
    b = batch(0)
    del b["pooled"]
    with pytest.raises(CacheError, match=r"missing \['pooled'\]"):
        w.write(b)
    b = batch(0)
    b[1] = b[1][:, :, None]
    with pytest.raises(CacheError, match=r"layer 1: expected a \(b, D\) array"):
        w.write(b)
    w.write(batch(0))
    b = batch(1)
    b[2] = np.zeros((BS, DIMS[2] + 1), np.float32)
    with pytest.raises(CacheError, match=r"layer 2: feature width 17 != 16"):
        w.write(b)
    for i in range(1, N_BATCHES):
        w.write(batch(i))
    with pytest.raises(CacheError, match="exceeds n_total"):
        w.write(batch(0))
    assert w.n_done == N


@pytest.mark.parametrize(
    "ids, match",
    [
        (["a.png", "b\n.png"], "newline"),
        (["a.png", "/abs/b.png"], "relative"),
        (["a.png", "a.png"], "duplicated"),
        ([], "empty"),
        (["a.png", ""], "non-empty"),
    ],
)
def test_bad_ids_raise(tmp_path, ids, match):
    with pytest.raises(CacheError, match=match):
        FeatureCache(tmp_path).writer(cache_key(SPEC), ids, [1], SPEC)


def test_bad_key_layers_and_meta_raise(tmp_path):
    cache = FeatureCache(tmp_path)
    with pytest.raises(CacheError, match="invalid cache key"):
        cache.entry_dir("../escape")
    with pytest.raises(CacheError, match="duplicate layers"):
        cache.writer(cache_key(SPEC), IDS, [1, "1"], SPEC)
    with pytest.raises(TypeError):
        cache.writer(cache_key(SPEC), IDS, [1], {"path": Path("/x")})


def test_remove_stale_partials(tmp_path):
    cache = FeatureCache(tmp_path)
    key = cache_key(SPEC)
    w = cache.writer(key, IDS, LAYERS, SPEC)
    w.write(batch(0))
    w.close()
    with cache.lock(key):  # someone is writing: keep it
        assert cache.remove_stale_partials() == []
    assert cache.remove_stale_partials() == [cache.partial_dir(key)]
    assert not cache.partial_dir(key).exists()


def test_cache_does_not_import_torch():
    code = "import sys, medprobe.cache; print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], env=_child_env(), capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


# ------------------------------------------------------- sharded writes (data-parallel)


def _rows_of(i: int) -> tuple[int, int]:
    return i * BS, min((i + 1) * BS, N)


def _assert_equal_entries(a: FeatureCache, b: FeatureCache, key: str) -> None:
    assert a.ids(key) == b.ids(key) and a.layers(key) == b.layers(key)
    ma, mb = a.meta(key), b.meta(key)
    assert {k: v for k, v in ma.items() if k != "created"} == {
        k: v for k, v in mb.items() if k != "created"
    }
    for layer in LAYERS:
        name = layer_filename(layer) + ".npy"
        assert (a.entry_dir(key) / name).read_bytes() == (b.entry_dir(key) / name).read_bytes()
    assert sorted(p.name for p in a.entry_dir(key).iterdir()) == sorted(
        p.name for p in b.entry_dir(key).iterdir()
    )


def test_shard_writers_give_the_single_writer_entry_byte_for_byte(tmp_path):
    key = cache_key(SPEC)
    ref = FeatureCache(tmp_path / "ref")
    _write_all(ref, key)

    cache = FeatureCache(tmp_path / "c")
    coord = cache.writer(key, IDS, LAYERS, SPEC)
    # shards: batches 0-1 | 2-3 | 4 (short), written interleaved
    ranges = [(0, 2 * BS), (2 * BS, 4 * BS), (4 * BS, N)]
    shards = [cache.shard_writer(key, IDS, LAYERS, rows=r, shard=k) for k, r in enumerate(ranges)]
    assert [s.n_remaining for s in shards] == [2 * BS, 2 * BS, N - 4 * BS]
    np.testing.assert_array_equal(shards[1].pending_rows(), np.arange(2 * BS, 4 * BS))
    for i in (2, 0, 4, 3, 1):
        shards[i // 2].write(batch(i))
    with pytest.raises(CacheError, match="cannot finalize"):
        shards[0].finalize()
    for s in shards:
        assert s.n_remaining == 0
        s.close()
    part = cache.partial_dir(key)
    assert sorted(p.name for p in part.glob("done-*.json")) == [
        "done-0.json",
        "done-1.json",
        "done-2.json",
    ]
    assert json.loads((part / "done-1.json").read_text())["done"] == [[2 * BS, 4 * BS]]
    coord.finalize()
    _assert_equal_entries(cache, ref, key)


def test_shard_writer_needs_the_coordinator_and_cannot_finalize(tmp_path):
    cache = FeatureCache(tmp_path)
    key = cache_key(SPEC)
    with pytest.raises(CacheError, match="coordinator .* must create it"):
        cache.shard_writer(key, IDS, LAYERS, rows=(0, BS), shard=0)
    coord = cache.writer(key, IDS, LAYERS, SPEC)
    with pytest.raises(CacheError, match=r"row range \(0, 99\) is outside \[0, 32\]"):
        cache.shard_writer(key, IDS, LAYERS, rows=(0, 99), shard=0)
    s0 = cache.shard_writer(key, IDS, LAYERS, rows=(0, BS), shard=0)
    s0.write(batch(0))
    with pytest.raises(CacheError, match="shard writer 0 cannot finalize"):
        s0.finalize()
    with pytest.raises(CacheError, match=r"batch of 7 rows after 7 exceeds the 7 rows of range"):
        s0.write(batch(0))
    with pytest.raises(CacheError, match=rf"cannot finalize, {BS}/{N} rows written"):
        coord.finalize()
    # a second shard producing another feature width is refused before it writes anything
    s1 = cache.shard_writer(key, IDS, LAYERS, rows=(BS, 2 * BS), shard=1)
    wide = batch(1)
    wide[2] = np.zeros((BS, DIMS[2] + 1), np.float32)
    with pytest.raises(CacheError, match=r"layer 2: feature width 17 != 16 already in"):
        s1.write(wide)


@pytest.mark.parametrize(
    "first, second",
    [
        # killed with 2 shards, resumed by one process
        ([(0, (0, 3 * BS)), (1, (3 * BS, N))], [(None, None)]),
        # killed as one process, resumed with 3 shards
        ([(None, None)], [(0, (0, 2 * BS)), (1, (2 * BS, 4 * BS)), (2, (4 * BS, N))]),
    ],
)
def test_resume_across_process_layouts(tmp_path, first, second):
    key = cache_key(SPEC)
    ref = FeatureCache(tmp_path / "ref")
    _write_all(ref, key)

    def start(cache, layout):
        coord = cache.writer(key, IDS, LAYERS, SPEC)
        if layout == [(None, None)]:
            return coord, [coord]
        return coord, [cache.shard_writer(key, IDS, LAYERS, rows=r, shard=k) for k, r in layout]

    cache = FeatureCache(tmp_path / "c")
    _, writers = start(cache, first)
    for w in writers:  # each process writes its first batch, then everything is killed
        i = int(w.pending_rows()[0]) // BS
        w.write(batch(i))
        w.close()
    done_before = {int(w.rows[0]) // BS for w in writers}

    coord, writers = start(cache, second)
    assert coord.resumed and coord.n_done == sum(
        _rows_of(i)[1] - _rows_of(i)[0] for i in done_before
    )
    assert not list(cache.partial_dir(key).glob("done-*.json"))  # merged into progress.json
    written = set()
    for w in writers:
        pending = w.pending_rows()
        while len(pending):
            i = int(pending[0]) // BS
            w.write(batch(i))
            written.add(i)
            pending = w.pending_rows()
        if w is not coord:
            w.close()
    assert written == set(range(N_BATCHES)) - done_before  # nothing extracted twice
    coord.finalize()
    _assert_equal_entries(cache, ref, key)


_SHARD_CHILD = """
import sys
from medprobe.cache import FeatureCache, cache_key
cache = FeatureCache(sys.argv[1])
k = int(sys.argv[2])
rows = [(0, 3 * BS), (3 * BS, N)][k]
w = cache.shard_writer(cache_key(SPEC), IDS, LAYERS, rows=rows, shard=k)
for i in range(rows[0] // BS, (rows[1] + BS - 1) // BS):
    w.write(batch(i))
w.close()
print(w.n_done)
"""


def test_two_processes_write_shards_of_one_entry(tmp_path):
    key = cache_key(SPEC)
    ref = FeatureCache(tmp_path / "ref")
    _write_all(ref, key)
    cache = FeatureCache(tmp_path / "c")
    coord = cache.writer(key, IDS, LAYERS, SPEC)
    procs = [_run_child(_SHARD_CHILD, str(cache.root), str(k)) for k in (0, 1)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        outs.append(int(out))
    assert outs == [3 * BS, N - 3 * BS]
    coord.finalize()
    _assert_equal_entries(cache, ref, key)
