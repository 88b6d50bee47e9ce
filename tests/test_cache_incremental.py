"""Issue 14.11: adding or removing images never recomputes the others.

A run on a changed image list reuses the rows already computed under the same extractor
fingerprint, keyed by image content, and extracts only the new images: on N images, then N - 2,
then N - 2 + 6 new ones, with the tiny CLIP on the demo set's real images. Every entry equals a
fresh extraction bit for bit; a corrupt source is never reused; another fingerprint never is.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import REPO, Compose

from medprobe.cache import FeatureCache
from medprobe.config import to_typed
from medprobe.data.manifest import Manifest
from medprobe.pipeline import features as feat
from medprobe.pipeline.job import _layers
from medprobe.registry import EXTRACTORS

DEMO = REPO / "medprobe" / "demo_data" / "pathmnist" / "images"
FIRST = [f"pathmnist_{i:03d}.png" for i in range(40)]  # the first run's N = 40 images
REMOVED = ["pathmnist_003.png", "pathmnist_017.png"]  # two "bad" files left out
ADDED = [f"pathmnist_{i:03d}.png" for i in range(100, 106)]  # six images never seen


def _manifest(root: Path, names: list[str]) -> Manifest:
    paths = [root / n for n in names]
    return Manifest(task="t", ids=names, paths=paths, labels=np.zeros(len(names), int),
                    classes=["a"], split=np.array(["train"] * len(names), dtype=object))  # fmt: skip


class _Counting:
    """Wraps an extractor and counts the images it is asked to extract."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.rows = inner, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def extract(self, batch: Any, layers: Any) -> Any:
        self.rows += len(batch)
        return self.inner.extract(batch, layers)


def _run(compose: Compose, cache: Path, names: list[str], *overrides: str,
         root: Path = DEMO) -> tuple[FeatureCache, str, dict[str, Any], int]:  # fmt: skip
    cfg = compose("model=clip", f"cache_dir={cache}", "progress=false", "model.num_workers=0",
                  "model.batch_size=8", *overrides)  # fmt: skip
    typed = to_typed(cfg)
    ex = _Counting(EXTRACTORS.get(typed.model.kind)(typed.model, typed.prompt.text))
    layers = _layers(typed, ex)[0]
    fc, key, info = feat.features(typed, _manifest(root, names), ex, layers)
    return fc, key, info, ex.rows


def _rows(fc: FeatureCache, key: str) -> dict[str, np.ndarray]:
    """id -> the entry's row of every layer side by side, as raw float16 bits."""
    blocks = [np.asarray(fc.load(key, x)).view(np.uint16) for x in fc.layers(key)]
    return {i: np.concatenate([b[r] for b in blocks]) for r, i in enumerate(fc.ids(key))}


def _same_as_fresh(compose: Compose, tmp: Path, fc: FeatureCache, key: str, names: list[str],
                   *overrides: str) -> None:  # fmt: skip
    """The entry equals, bit for bit and in row order, a fresh extraction in an empty cache."""
    fresh_root = tmp / f"fresh_{len(list(tmp.glob('fresh_*')))}"
    f2, k2, info, n = _run(compose, fresh_root, names, *overrides)
    assert k2 == key and n == len(names) and "reused_rows" not in info
    assert fc.ids(key) == f2.ids(k2) == names
    got, want = _rows(fc, key), _rows(f2, k2)
    for i in names:
        np.testing.assert_array_equal(got[i], want[i], err_msg=i)


@pytest.fixture
def clip(tiny_clip: Path) -> str:
    return f"model.hf_id={tiny_clip}"


def test_removing_then_adding_images_extracts_only_the_new_ones(
    compose: Compose, tmp_path: Path, clip: str
) -> None:
    cache = tmp_path / "cache"
    fc, k1, info1, n1 = _run(compose, cache, FIRST, clip)
    assert n1 == 40 and info1["extracted_rows"] == 40 and "reused_rows" not in info1

    fewer = [n for n in FIRST if n not in REMOVED]
    fc, k2, info2, n2 = _run(compose, cache, fewer, clip)
    assert k2 != k1  # another image list, another entry: the key is unchanged in kind
    assert n2 == 0 and info2["extracted_rows"] == 0 and info2["cache_hit"] is False
    assert info2["reused_rows"] == 38 and info2["reused_from"] == [{"key": k1, "rows": 38}]
    assert fc.meta(k2)["n"] == 38 and fc.ids(k2) == fewer
    assert fc.row_digests(k2) is not None and fc.verify(k2)["verified"]

    more = fewer + ADDED
    fc, k3, info3, n3 = _run(compose, cache, more, clip)
    assert n3 == 6 and info3["extracted_rows"] == 6 and info3["reused_rows"] == 38
    assert [s["key"] for s in info3["reused_from"]][0] in (k1, k2)
    assert sum(s["rows"] for s in info3["reused_from"]) == 38

    # a rerun of any of the three is a plain hit
    assert _run(compose, cache, fewer, clip)[2]["cache_hit"] is True
    for key, names in ((k2, fewer), (k3, more)):
        _same_as_fresh(compose, tmp_path, fc, key, names, clip)


def test_rows_follow_image_content_not_names(compose: Compose, tmp_path: Path, clip: str) -> None:
    """A renamed or moved image keeps its row; an image rewritten under its old name does not
    (its content digest changed), so it is extracted again."""
    root = tmp_path / "images"
    shutil.copytree(DEMO, root, ignore=lambda d, names: [n for n in names if n not in FIRST])
    cache = tmp_path / "cache"
    _run(compose, cache, FIRST, clip, root=root)
    (root / FIRST[0]).rename(root / "moved.png")  # same bytes, new id
    shutil.copyfile(DEMO / ADDED[0], root / FIRST[1])  # same id, new bytes
    names = ["moved.png", *FIRST[1:]]
    fc, key, info, n = _run(compose, cache, names, clip, root=root)
    assert n == 1 and info["reused_rows"] == 39  # only the rewritten image
    fresh = _run(compose, tmp_path / "fresh", names, clip, root=root)
    assert fresh[1] == key
    got, want = _rows(fc, key), _rows(fresh[0], key)
    assert all(np.array_equal(got[i], want[i]) for i in names)


def test_stat_fingerprints_reuse_by_id_size_and_mtime_only(
    compose: Compose, tmp_path: Path, clip: str
) -> None:
    """``data.fingerprint=stat`` trusts (id, size, mtime) for the key, and so for reuse; a
    content run never takes rows of a stat entry (their digests say nothing of the bytes)."""
    cache = tmp_path / "cache"
    _run(compose, cache, FIRST, clip, "data.fingerprint=stat")
    fewer = [n for n in FIRST if n not in REMOVED]
    fc, key, info, n = _run(compose, cache, fewer, clip, "data.fingerprint=stat")
    assert n == 0 and info["reused_rows"] == 38
    assert all(d.startswith("stat:") for d in fc.row_digests(key) or [])
    fc, key, info, n = _run(compose, cache, fewer, clip)  # content
    assert n == 38 and "reused_rows" not in info


def test_a_corrupt_source_is_not_reused_and_says_so(
    compose: Compose, tmp_path: Path, clip: str, capfd: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "cache"
    fc, k1, _, _ = _run(compose, cache, FIRST, clip)
    layer_file = fc.entry_dir(k1) / fc.meta(k1)["files"][3]
    data = bytearray(layer_file.read_bytes())
    data[-200:-100] = bytes(100)  # zero a few values of the last rows: bit rot
    layer_file.write_bytes(bytes(data))
    capfd.readouterr()

    fewer = [n for n in FIRST if n not in REMOVED]
    fc, k2, info, n = _run(compose, cache, fewer, clip)
    assert n == 38 and info["extracted_rows"] == 38 and "reused_rows" not in info
    err = capfd.readouterr().err
    assert f"note: cache entry {k1} is not reused: cache entry {k1}: {layer_file} does not " \
           "match the checksum in meta.json" in err  # fmt: skip
    assert not fc.is_complete(k1) and len(fc.corrupt_entries()) == 1  # set aside, kept
    _same_as_fresh(compose, tmp_path, fc, k2, fewer, clip)


@pytest.mark.parametrize(
    "other",
    [
        ["model.layers=[1,2]"],  # another layer set
        ["model.dtype=bfloat16"],  # another dtype
        ["model.resize=pad"],  # other preprocessing
        ["data.max_side=512"],  # other loading
    ],
)
def test_another_fingerprint_is_never_reused(
    compose: Compose, tmp_path: Path, clip: str, other: list[str]
) -> None:
    cache = tmp_path / "cache"
    _run(compose, cache, FIRST, clip, "model.layers=[1,2,pooled]")
    fewer = [n for n in FIRST if n not in REMOVED]
    fc, key, info, n = _run(compose, cache, fewer, clip, "model.layers=[1,2,pooled]", *other)
    assert n == 38 and info["extracted_rows"] == 38 and "reused_rows" not in info


def test_a_prompt_is_part_of_the_fingerprint(compose: Compose) -> None:
    """Everything in the key but the image list is the reuse fingerprint: the prompt, weights,
    dtype, layers, loader and resize (so a prompt-dependent extractor never mixes rows)."""
    spec = {"extractor": {"prompt": "a"}, "layers": ["1"], "images": "x", "n_images": 3,
            "loader": {"max_side": 1024}}  # fmt: skip
    same = feat.reuse_fingerprint({**spec, "images": "y", "n_images": 4})
    assert same == feat.reuse_fingerprint(spec)
    for change in ({"extractor": {"prompt": "b"}}, {"layers": ["2"]}, {"resize": "pad"},
                   {"loader": {"max_side": 512}}):  # fmt: skip
        assert feat.reuse_fingerprint({**spec, **change}) != same, change


def test_an_interrupted_reuse_resumes(
    compose: Compose, tmp_path: Path, clip: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed after the copy, during the extraction of the new images: the rerun keeps the
    copied rows and the extracted batch, and extracts only the rest."""
    cache = tmp_path / "cache"
    _run(compose, cache, FIRST, clip)
    more = FIRST + ADDED + [f"pathmnist_{i:03d}.png" for i in range(106, 116)]  # 16 new

    real = feat.CacheWriter.write
    calls = {"n": 0}

    def dies_on_second_batch(self: Any, feats: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        real(self, feats)

    monkeypatch.setattr(feat.CacheWriter, "write", dies_on_second_batch)
    with pytest.raises(KeyboardInterrupt):
        _run(compose, cache, more, clip)
    monkeypatch.undo()
    fc, key, info, n = _run(compose, cache, more, clip)
    assert info["resumed_from"] == 40 + 8 and n == 8 and info["extracted_rows"] == 8
    _same_as_fresh(compose, tmp_path, fc, key, more, clip)


def test_results_json_and_the_features_line_name_the_source(compose: Compose) -> None:
    from medprobe.pipeline.run import features_line
    from medprobe.results import CacheInfo

    info = {"cache_key": "b" * 64, "cache_dir": "/c", "cache_hit": False, "resumed_from": 0,
            "skipped_images": [], "extract_seconds": 1.0, "extracted_rows": 2,
            "reused_rows": 98, "reused_from": [{"key": "a" * 64, "rows": 98}]}  # fmt: skip
    c = CacheInfo.from_json(info)
    assert CacheInfo.from_json(json.loads(json.dumps(c.to_json()))) == c
    assert c.to_json()["reused_from"] == [{"key": "a" * 64, "rows": 98}]
    assert features_line(c) == (
        f"features: extracted 2 new, reused 98 from {'a' * 12} (key {'b' * 12} in /c)"
    )
    plain = CacheInfo.from_json({**info, "reused_rows": None, "reused_from": None})
    assert features_line(plain) == f"features: extracted (key {'b' * 12} in /c)"
    assert "reused_rows" not in plain.to_json()


# ------------------------------------------------------------- data-parallel (torchrun)


def _csv(path: Path, drop: int, add: int) -> Path:
    """101 demo images (60 train, 15 val, 26 test) less the first ``drop`` train rows, plus
    ``add`` other train rows."""
    csv = DEMO.parent / "labels.csv"
    lines = csv.read_text().splitlines()
    rows = {s: [r for r in lines[1:] if r.endswith("," + s)] for s in ("train", "val", "test")}
    keep = rows["train"][drop:60] + rows["train"][60 : 60 + add] + rows["val"][:15]
    path.write_text("\n".join([lines[0], *keep, *rows["test"][:26]]) + "\n")
    return path


def _medprobe(tmp: Path, launcher: list[str], csv: Path, out: str, cache: str,
              model: Path) -> dict[str, Any]:  # fmt: skip
    import subprocess

    from helpers import isolated_env

    env = isolated_env(tmp)
    env.update(MEDPROBE_CACHE_DIR=str(tmp / cache), OMP_NUM_THREADS="1")
    args = ["task=csv", f"task.root={DEMO.parent}", f"task.csv={csv}", "model=clip",
            f"model.hf_id={model}", "layer=pooled", "model.batch_size=8", "model.num_workers=0",
            "tracker=none", "bootstrap.n=50", "progress=false", f"output_dir={tmp / out}"]  # fmt: skip
    proc = subprocess.run([*launcher, *args], cwd=tmp, env=env, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    res = json.loads((tmp / out / "results.json").read_text())
    res["stdout"] = proc.stdout
    return dict(res)


@pytest.mark.slow
def test_data_parallel_reuse_extracts_only_the_new_images(tmp_path: Path, tiny_clip: Path) -> None:
    """One process extracts 101 images; a two-process torchrun launch on 2 fewer and 4 new
    images copies the 99 on rank 0 and shares the 4 new ones; the entry equals a fresh
    one-process extraction byte for byte."""
    import sys

    one = [sys.executable, "-m", "medprobe"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc_per_node", "2", "-m", "medprobe"]  # fmt: skip
    first = _medprobe(tmp_path, one, _csv(tmp_path / "a.csv", 0, 0), "a", "cache", tiny_clip)
    changed = _csv(tmp_path / "b.csv", 2, 4)
    dp = _medprobe(tmp_path, torchrun, changed, "b", "cache", tiny_clip)
    c = dp["cache"]
    assert c["processes"] == 2 and c["extracted_rows"] == 4 and c["reused_rows"] == 99
    assert c["reused_from"] == [{"key": first["cache"]["cache_key"], "rows": 99}]
    src = first["cache"]["cache_key"][:12]
    assert f"features: extracted 4 new, reused 99 from {src} (key " in dp["stdout"]
    fresh = _medprobe(tmp_path, one, changed, "c", "fresh", tiny_clip)
    assert fresh["cache"]["cache_key"] == c["cache_key"] and "reused_rows" not in fresh["cache"]
    a = tmp_path / "cache" / c["cache_key"]
    b = tmp_path / "fresh" / c["cache_key"]
    for f in sorted(b.iterdir()):
        if f.name not in ("meta.json", ".last_used"):
            assert f.read_bytes() == (a / f.name).read_bytes(), f.name
    assert dp["metrics"] == fresh["metrics"]


def test_copy_rows_copies_pending_rows_in_any_order_and_refuses_mismatches(
    tmp_path: Path,
) -> None:
    """CacheWriter.copy_rows on synthetic rows: permuted and scattered rows land where asked,
    rows already written are left alone, another width or a missing layer is refused."""
    from medprobe.errors import CacheError

    fc = FeatureCache(tmp_path)
    rng = np.random.default_rng(0)
    src = {0: rng.standard_normal((10, 4)), "pooled": rng.standard_normal((10, 3))}
    w = fc.writer("a" * 64, [f"s{i}" for i in range(10)], [0, "pooled"], meta={},
                  digests=[f"d{i}" for i in range(10)])  # fmt: skip
    w.write(src)
    w.finalize()
    assert fc.row_digests("a" * 64) == [f"d{i}" for i in range(10)]
    assert fc.verify("a" * 64)["files"][:2] == ["ids.txt", "digests.txt"]

    w = fc.writer("b" * 64, [f"t{i}" for i in range(6)], [0, "pooled"], meta={})
    w.write({0: np.ones((1, 4)), "pooled": np.ones((1, 3))})  # row 0 extracted
    assert w.copy_rows("a" * 64, [0, 5, 3, 2, 1], [9, 0, 7, 6, 2]) == 4  # row 0 is done
    assert w.pending_rows().tolist() == [4] and w.n_done == 5
    w.write({0: np.zeros((1, 4)), "pooled": np.zeros((1, 3))})
    w.finalize()
    x = np.asarray(fc.load("b" * 64, 0))
    want = np.asarray(src[0], dtype=np.float16)
    np.testing.assert_array_equal(x[[5, 3, 2, 1]], want[[0, 7, 6, 2]])
    assert (x[0] == 1).all() and (x[4] == 0).all()

    w = fc.writer("c" * 64, ["u"], [0, 1], meta={})
    with pytest.raises(CacheError, match=r"lacks layers \[1\]"):
        w.copy_rows("a" * 64, [0], [0])
    w = fc.writer("e" * 64, ["u", "v"], [0], meta={})
    w.write({0: np.ones((1, 5))})
    with pytest.raises(CacheError, match="feature width of layers"):
        w.copy_rows("a" * 64, [1], [0])
    with pytest.raises(CacheError, match="outside"):
        w.copy_rows("a" * 64, [1], [10])
