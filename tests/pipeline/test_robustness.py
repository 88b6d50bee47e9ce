"""User mistakes and hostile inputs: one clear error, never a silent wrong number.

In tests/pipeline/: the mistakes are caught on the way through the pipeline (config
validation, label CSVs, class coverage of the rows, the feature cache, the output folder)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
from helpers import Compose, run_medprobe
from PIL import Image

from medprobe.cache import CacheError, FeatureCache
from medprobe.config import ConfigError, validate
from medprobe.data.manifest import Manifest, ManifestError
from medprobe.data.tasks.csv_task import read_label_csv
from medprobe.extractors.base import ExtractorError, resolve_layers
from medprobe.pipeline.features import features
from medprobe.pipeline.rows import check_class_coverage


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("bootstrap.n=1", "bootstrap.n must be >= 2"),
        ("seed=-1", "seed must be >= 0"),
        ("probe.C_grid=[nan,1]", "probe.C_grid must be a non-empty list of finite numbers"),
        ("data.max_side=0", "data.max_side must be >= 32"),
        ("model.num_workers=-1", "model.num_workers must be >= 0"),
        ("model.device=foo", "model.device must be auto, cpu, mps, cuda or cuda:N"),
        ("task=csv task.val_fraction=0.9", "task.test_fraction must be in [0, 1) with"),
        ("layer=null", "layer must be a layer id"),
        # a float, an empty list or a mapping was a TypeError traceback in resolve_layers
        ("layer=3.5", "layer must be a layer id (int or name), a list of them, or all, got 3.5"),
        ("layer=[1,2.5]", "layer must be a layer id (int or name), a list of them, or all"),
        ("layer=[]", "layer must be a layer id (int or name), a list of them, or all, got []"),
        ("layer={a:1}", "layer must be a layer id (int or name), a list of them, or all"),
        ("model.layers=1.5", "model.layers must be a layer id (int or name), a list of them"),
        # a negative share was accepted ("more than task.max_bad_image_share=-1"), 2 let every
        # image be bad
        ("task=t7 task.max_bad_image_share=-1", "task.max_bad_image_share must be in [0, 1]"),
        ("task=t7 task.max_bad_image_share=2", "task.max_bad_image_share must be in [0, 1]"),
        # a ValueError traceback from numpy's RNG
        ("task=csv task.split_seed=-1", "task.split_seed must be >= 0, got -1"),
        # '' put the cache entries into the working folder
        ("cache_dir=''", "cache_dir must be a folder (unset $MEDPROBE_CACHE_DIR if it is empty"),
        # '' made a single-label task multi-label (one binary probe per class), silently
        ("task=csv task.label_sep=''", "task.label_sep must be a separator such as '|', or null"),
    ],
)
def test_bad_values_fail_before_any_work(compose: Compose, override: str, message: str) -> None:
    """Ranges a type cannot express; a value outside a closed set (``probe.class_weight=foo``)
    fails earlier, at compose time (tests/config/test_config.py)."""
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate(compose(*override.split()))


def test_booleans_are_not_layers() -> None:
    with pytest.raises(ExtractorError, match="True is not a layer"):
        resolve_layers(True, [0, 1, 2])
    with pytest.raises(ExtractorError, match="not a layer"):
        resolve_layers([1, None], [0, 1, 2])


def test_ragged_and_non_utf8_csv_rows(tmp_path: Path) -> None:
    p = tmp_path / "labels.csv"
    p.write_text("path,label,patient_id\na.png,effusion,P1\nb.png,pleural effusion, left,P2\n")
    with pytest.raises(ManifestError, match=r"row 3: 4 fields for 3 columns"):
        read_label_csv(p, root=tmp_path)
    p.write_bytes("path,label\na.png,x\n".encode("utf-16"))
    with pytest.raises(ManifestError, match="not UTF-8"):
        read_label_csv(p, root=tmp_path)
    with pytest.raises(ManifestError, match="duplicates"):
        read_label_csv(p, root=tmp_path, classes=["x", "x"])


def _manifest(labels: list[int], split: list[str], classes: list[str]) -> Manifest:
    n = len(labels)
    return Manifest(task="t", ids=[f"{i}.png" for i in range(n)], paths=[Path(f"{i}.png") for i in range(n)],
                    labels=np.array(labels), classes=classes, split=np.array(split, dtype=object))  # fmt: skip


def test_class_without_training_rows_is_refused_not_scored_0_5() -> None:
    m = _manifest([0, 1, 0, 1, 0, 1, 2], ["train"] * 4 + ["test"] * 3, ["a", "b", "c"])
    fit, test = np.arange(4), np.arange(4, 7)
    with pytest.raises(ConfigError, match="'c' occur in the test split but not in the probe's"):
        check_class_coverage(m, fit, test)
    single = _manifest([0, 1, 0, 1, 0, 0], ["train"] * 4 + ["test"] * 2, ["a", "b"])
    with pytest.raises(ConfigError, match=r"single class \['a'\]"):
        check_class_coverage(single, np.arange(4), np.arange(4, 6))


def test_same_size_rewrite_with_old_mtime_misses_the_cache(tmp_path: Path) -> None:
    img = tmp_path / "x.bmp"
    Image.new("RGB", (16, 16), (10, 20, 30)).save(img)
    m = _manifest([0], ["test"], ["a"])
    m.paths, m.ids = [img], ["x.bmp"]
    before = (m.image_fingerprint("content"), m.image_fingerprint("stat"))
    st = os.stat(img)
    Image.new("RGB", (16, 16), (200, 0, 0)).save(img)  # same size: uncompressed BMP
    os.utime(img, ns=(st.st_atime_ns, st.st_mtime_ns))  # as cp -p / rsync -a would
    assert os.stat(img).st_size == st.st_size
    assert m.image_fingerprint("content") != before[0]  # default: the change is seen
    assert m.image_fingerprint("stat") == before[1]  # the opt-in fast mode trusts metadata


class _MeanColour:
    """A stand-in extractor: the mean RGB of each image (exact, instant)."""

    name = "mean_colour"

    def layers(self) -> list[int]:
        return [0]

    def fingerprint(self) -> dict:
        return {"extractor": self.name}

    def preprocess(self, image):  # type: ignore[no-untyped-def]
        import torch

        return torch.from_numpy(np.asarray(image, dtype=np.float32).mean(axis=(0, 1)) + 1.0)

    def extract(self, batch, layers):  # type: ignore[no-untyped-def]
        return {0: batch.numpy().astype(np.float32)}


def test_complete_entry_is_read_without_the_lock(
    compose: Compose, tmp_path: Path, shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = shared_data / "T8_knee_kl"
    m = read_label_csv(root / "labels.csv", root=root)
    cfg = compose(f"cache_dir={tmp_path / 'cache'}", "progress=false", "model.num_workers=0")
    cache, key, info = features(cfg, m, _MeanColour(), [0])
    assert info["cache_hit"] is False and cache.load(key, 0).shape == (100, 3)

    def read_only(self: FeatureCache, key: str, timeout: float = -1):  # type: ignore[no-untyped-def]
        raise PermissionError(13, "Read-only file system")

    monkeypatch.setattr(FeatureCache, "lock", read_only)
    cache2, key2, info2 = features(cfg, m, _MeanColour(), [0])  # a shared read-only cache
    assert info2["cache_hit"] is True and key2 == key
    other = compose(f"cache_dir={tmp_path / 'other'}", "progress=false", "model.num_workers=0")
    with pytest.raises(CacheError, match="cannot write"):
        features(other, m, _MeanColour(), [0])
    # a cache_dir that is a file said "cannot write (File exists)"
    (tmp_path / "afile").write_text("x")
    monkeypatch.undo()
    as_file = compose(f"cache_dir={tmp_path / 'afile'}", "progress=false", "model.num_workers=0")
    with pytest.raises(CacheError) as e:
        features(as_file, m, _MeanColour(), [0])
    assert str(e.value) == f"cache_dir {tmp_path / 'afile'} is a file, not a folder"


def test_output_dir_through_a_file_is_one_line_before_hydra(tmp_path: Path) -> None:
    from medprobe.cli.run import output_dir_problem as _output_dir_problem

    (tmp_path / "afile").write_text("x")
    assert _output_dir_problem([f"output_dir={tmp_path / 'afile' / 'out'}"]) == (
        f"output_dir={tmp_path / 'afile' / 'out'}: {tmp_path / 'afile'} is a file, not a folder"
    )
    assert _output_dir_problem([f"output_dir={tmp_path / 'new' / 'deeper'}"]) is None
    assert _output_dir_problem(["layer=4"]) is None
    p = run_medprobe(tmp_path, f"output_dir={tmp_path / 'afile'}", check=False)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.strip().splitlines() == [
        f"medprobe: error: output_dir={tmp_path / 'afile'}: {tmp_path / 'afile'} is a file, "
        "not a folder"
    ]
