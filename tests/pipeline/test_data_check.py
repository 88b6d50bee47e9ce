"""Issue 16.4-16.8 on real images: the data stage before any model (medprobe.pipeline.data),
``medprobe data``, splits independent of row order, the results.json ``data`` section."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from helpers import Compose, run_medprobe

from medprobe.errors import BadImagesError, ConfigError, ManifestError
from medprobe.pipeline.run import run


def _tiles(shared: Path, dest: Path) -> Path:
    """The 45 real CRC tiles (9 classes x 5) with a labels.csv (path,label)."""
    (dest / "tiles").mkdir(parents=True)
    lines = ["path,label"]
    for t in sorted((shared / "T1_crc" / "tiles").iterdir()):
        shutil.copy(t, dest / "tiles" / t.name)
        lines.append(f"tiles/{t.name},{t.name.split('-')[0]}")
    (dest / "labels.csv").write_text("\n".join(lines) + "\n")
    return dest


def _no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    from medprobe.registry import EXTRACTORS

    def no_model(*a: object, **k: object) -> None:
        raise AssertionError("the extractor was built before the data checks")

    monkeypatch.setattr(EXTRACTORS, "get", lambda name: no_model)


# --- 16.4: images left out by data.on_error=skip are left out before the split


def test_unreadable_images_are_left_out_before_the_split(
    compose: Compose, tmp_path: Path, shared_data: Path, tiny_clip: Path
) -> None:
    from medprobe.data.tasks.csv_task import read_label_csv

    root = _tiles(shared_data, tmp_path / "crc")
    common = ["task=csv", f"data_root={root}", "task.test_fraction=0.3", "tracker=none",
              "bootstrap.n=50", "progress=false", f"cache_dir={tmp_path / 'cache'}"]  # fmt: skip
    full = read_label_csv(root / "labels.csv", root=root, test_fraction=0.3)
    # break every ADI tile the split of all 45 rows puts in train: split first, drop later
    # left ADI in val/test only, and the run failed after extraction ("'ADI' occur in the test
    # split but not in the probe's training rows")
    broken = [i for i, s, y in zip(full.ids, full.split, full.labels, strict=True)
              if s == "train" and full.classes[y] == "ADI"]  # fmt: skip
    assert len(broken) == 3
    for rel in broken:
        (root / rel).write_bytes(b"not an image")
    out = tmp_path / "run"
    res = run(compose(*common, "model=clip", f"model.hf_id={tiny_clip}", "layer=pooled",
                      "data.on_error=skip", f"output_dir={out}")).result  # fmt: skip
    assert res.counts.skipped_images == 3
    assert res.counts.per_split["train"]["ADI"] >= 1  # split made on the 42 readable tiles
    assert res.data is not None and res.data["bad_images"]["n"] == 3
    assert sorted(Path(p).name for p, _ in res.data["bad_images"]["files"]) == sorted(
        Path(b).name for b in broken
    )
    # the split is the one of a labels.csv without those rows
    kept = [ln for ln in (root / "labels.csv").read_text().splitlines()
            if ln.split(",")[0] not in broken]  # fmt: skip
    (tmp_path / "kept.csv").write_text("\n".join(kept) + "\n")
    want = read_label_csv(tmp_path / "kept.csv", root=root, test_fraction=0.3)
    with open(out / "splits.csv") as f:
        got = {r["id"]: r["split"] for r in csv.DictReader(f)}
    assert got == dict(zip(want.ids, want.split, strict=True))


# --- 16.5: reversing labels.csv changes nothing (split, AUROC, cache key)


def test_reversed_labels_csv_gives_the_same_split_auroc_and_cache_key(
    compose: Compose, tmp_path: Path, shared_data: Path, tiny_clip: Path
) -> None:
    src = shared_data / "T8_knee_kl"
    header, *rows = (src / "labels.csv").read_text().splitlines()
    rev = tmp_path / "reversed.csv"
    rev.write_text("\n".join([header, *rows[::-1]]) + "\n")
    common = ["task=csv", f"task.root={src}", "model=clip", f"model.hf_id={tiny_clip}",
              "layer=pooled", "tracker=none", "bootstrap.n=50", "progress=false",
              f"cache_dir={tmp_path / 'cache'}"]  # fmt: skip
    a = run(compose(*common, f"output_dir={tmp_path / 'a'}")).result
    b = run(compose(*common, f"task.csv={rev}", f"output_dir={tmp_path / 'b'}")).result
    assert b.cache.cache_key == a.cache.cache_key and b.cache.cache_hit is True
    assert b.metrics["auroc_macro"].value == a.metrics["auroc_macro"].value
    assert a.data is not None and b.data is not None
    assert a.data["split_sha256"] == b.data["split_sha256"]
    assert (tmp_path / "a" / "splits.csv").read_text() == (
        tmp_path / "b" / "splits.csv"
    ).read_text()
    with open(tmp_path / "a" / "splits.csv") as f:
        split = list(csv.DictReader(f))
    assert len(split) == 100 and [r["id"] for r in split] == sorted(r["id"] for r in split)
    assert {r["probe"] for r in split} == {"fit", "val", "test"}
    assert sum(r["split"] == "test" for r in split) == a.counts.test == 20


# --- 16.7: medprobe data


def test_medprobe_data_prints_the_summary_and_writes_the_manifest(
    tmp_path: Path, shared_data: Path
) -> None:
    p = run_medprobe(tmp_path, "data", "task=csv", f"data_root={shared_data / 'T8_knee_kl'}",
                     "progress=false", "--out", "chk")  # fmt: skip
    out = p.stdout.splitlines()
    assert out[0] == "task T8_knee_kl: 100 images, 5 classes"
    assert out[1].startswith("split: stratified patient-level split")
    table = out[out.index("class   train     val    test     all") + 2 :][:6]
    assert table == [f"{k}          14       2       4      20" for k in range(5)] + [
        "total      70      10      20     100"
    ]
    assert "patients: 95 (train 65, val 10, test 20); rows without a patient id: 0" in out
    assert "images: all readable" in out and "excluded rows: none" in out
    # 4 test images per grade: named as a run's table note names them ("<class> (<n>)")
    assert (
        "few test positives (AUROC intervals unreliable): 0 (4), 1 (4), 2 (4), 3 (4), 4 (4)" in out
    )
    assert out[-1].startswith("checks: passed (probe rows: fit 70, val 10, test 20")
    with open(tmp_path / "chk" / "manifest.csv") as f:
        man = list(csv.DictReader(f))
    assert len(man) == 100 and set(man[0]) == {"id", "path", "label", "split", "patient_id"}
    summary = json.loads((tmp_path / "chk" / "data.json").read_text())
    assert summary["checks"]["passed"] is True and summary["n_images"] == 100


def test_medprobe_data_lists_bad_files_and_exclusions(
    tmp_path: Path, shared_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from medprobe.cli.data import main

    root = _tiles(shared_data, tmp_path / "crc")
    (root / "tiles" / "TUM-broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    with open(root / "labels.csv", "a") as f:
        f.write("tiles/TUM-broken.png,TUM\ntiles/NORM-x.png,\n")  # a bad row: empty label
    args = ["task=csv", f"data_root={root}", "task.on_bad_row=skip", "progress=false",
            "--out", str(tmp_path / "chk")]  # fmt: skip
    with pytest.raises(BadImagesError, match=r"1 unreadable image\(s\) \(listed above\)"):
        main(args)
    text = capsys.readouterr().out
    assert "excluded rows (task.on_bad_row=skip): 1 (empty_label 1)" in text
    assert f"  {root / 'labels.csv'}, row 48: empty 'label'" in text
    assert "unreadable images (data.on_error=stop: a run stops on them): 1" in text
    assert f"  {root / 'tiles' / 'TUM-broken.png'}: " in text
    assert main([*args, "data.on_error=skip"]) == 0
    text = capsys.readouterr().out
    assert "unreadable images (data.on_error=skip: left out before the split): 1" in text
    assert "task crc: 45 images, 9 classes" in text
    with open(tmp_path / "chk" / "manifest.csv") as f:
        assert len(list(csv.DictReader(f))) == 45


# --- 16.8: every check on the manifest before any model


def _single_class_test(shared_data: Path, tmp: Path) -> Path:
    """The knee labels.csv with a split column whose test split holds KL grade 0 only."""
    root = tmp / "knee"
    shutil.copytree(shared_data / "T8_knee_kl", root)
    rows = (root / "labels.csv").read_text().splitlines()
    test_patients = {r.split(",")[2] for r in rows[1:] if r.split(",")[1] == "0"}
    out = [rows[0] + ",split"]
    for r in rows[1:]:
        _, label, patient = r.split(",")
        if patient in test_patients and label != "0":
            continue
        out.append(r + (",test" if patient in test_patients else ",train"))
    (root / "labels.csv").write_text("\n".join(out) + "\n")
    return root


def test_single_class_test_split_fails_in_medprobe_data_and_before_the_model(
    compose: Compose,
    tmp_path: Path,
    shared_data: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from medprobe.cli.data import main

    root = _single_class_test(shared_data, tmp_path)
    _no_model(monkeypatch)
    with pytest.raises(ConfigError, match="the test split holds a single class"):
        run(compose("task=csv", f"data_root={root}", "tracker=none", "data.on_error=skip",
                    f"output_dir={tmp_path / 'out'}"))  # fmt: skip
    with pytest.raises(ConfigError, match=r"the test split holds a single class \['0'\]"):
        main(["task=csv", f"data_root={root}", "progress=false", "--out", str(tmp_path / "c")])
    assert "test" in capsys.readouterr().out  # the summary is printed first
    summary = json.loads((tmp_path / "c" / "data.json").read_text())
    assert summary["checks"]["passed"] is False
    assert summary["counts"]["test"] == {"0": 20, "1": 0, "2": 0, "3": 0, "4": 0}


def test_other_manifest_checks_run_before_the_model(
    compose: Compose, tmp_path: Path, shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from collections import Counter

    from medprobe.pipeline.job import build_job

    _no_model(monkeypatch)
    src = shared_data / "T8_knee_kl"
    with open(src / "labels.csv") as f:
        rows = list(csv.DictReader(f))
    knees = Counter(r["patient_id"] for r in rows)
    two_knees = sorted(p for p, n in knees.items() if n == 2)
    assert len(two_knees) == 5

    def write(name: str, split: dict[str, str]) -> Path:
        p = tmp_path / f"{name}.csv"
        with open(p, "w", newline="") as f:
            w = csv.DictWriter(f, ["path", "label", "patient_id", "split"])
            w.writeheader()
            w.writerows({**r, "split": split[r["path"]]} for r in rows if r["path"] in split)
        return p

    def cfg(p: Path, *more: str):  # type: ignore[no-untyped-def]
        return compose("task=csv", f"task.root={src}", f"task.csv={p}", "tracker=none",
                       f"output_dir={tmp_path / 'o'}", *more)  # fmt: skip

    one_knee = [r for r in rows if knees[r["patient_id"]] == 1]
    # the probe's training rows hold a single class (grade 4); test holds grades 0-3
    fit1 = write("fit1", {r["path"]: "train" if r["label"] == "4" else "test" for r in one_knee})
    with pytest.raises(ConfigError, match=r"the probe's training rows hold a single class \['4'\]"):
        build_job(cfg(fit1))
    # a patient on two sides of the given split
    split = {r["path"]: "train" if i % 3 else "test" for i, r in enumerate(one_knee)}
    a, b = (r["path"] for r in rows if r["patient_id"] == two_knees[0])
    split |= {a: "train", b: "test"}
    with pytest.raises(ManifestError, match=f"patient '{two_knees[0]}' is in both"):
        build_job(cfg(write("two", split)))
    # bootstrap.unit=patient on a task without patient ids
    crc = _tiles(shared_data, tmp_path / "crc")
    with pytest.raises(ConfigError, match="bootstrap.unit=patient but task csv has no"):
        build_job(compose("task=csv", f"data_root={crc}", "bootstrap.unit=patient",
                          "tracker=none", f"output_dir={tmp_path / 'o2'}"))  # fmt: skip
