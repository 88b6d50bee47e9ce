"""task=hf: Hugging Face datasets built here from the real images in ../shared/data (no
network): T8 knee KL grades with patient ids (save_to_disk, parquet in the Hub's layout,
imagefolder) and T7 chest X-ray findings (multi-label)."""

from __future__ import annotations

import csv
import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import Compose, run_medprobe
from omegaconf import OmegaConf

from medprobe.config import HfTaskConfig
from medprobe.data.images import load_image
from medprobe.data.manifest import Manifest, ManifestError
from medprobe.data.tasks.hf_task import HfImages, build_manifest

datasets = pytest.importorskip("datasets")

GRADES = ["KL0", "KL1", "KL2", "KL3", "KL4"]
#: the dataset split of each of the 95 knee patients (sorted ids): every 5th test, the next val
SPLIT_OF = {0: "test", 1: "validation"}


def cfg(**kw: Any) -> HfTaskConfig:
    """A typed task config as compose + to_typed gives it."""
    node = OmegaConf.merge(OmegaConf.structured(HfTaskConfig), {"name": "x", "kind": "hf", **kw})
    out = OmegaConf.to_object(node)
    assert isinstance(out, HfTaskConfig)
    return out


def knee_rows(shared: Path) -> list[dict[str, str]]:
    """The 100 T8 rows with their dataset split (patient-level, fixed here)."""
    with open(shared / "T8_knee_kl" / "labels.csv") as f:
        rows = list(csv.DictReader(f))
    patients = sorted({r["patient_id"] for r in rows})
    for r in rows:
        r["split"] = SPLIT_OF.get(patients.index(r["patient_id"]) % 5, "train")
        r["file"] = str(shared / "T8_knee_kl" / r["path"])
    return rows


def knee_dict(rows: list[dict[str, str]], *, class_label: bool = True, embed: bool = True) -> Any:
    """A DatasetDict train/validation/test: image, label (ClassLabel or string), patient_id."""
    out = {}
    for s in ("train", "validation", "test"):
        part = [r for r in rows if r["split"] == s]
        images: list[Any] = [
            {"bytes": Path(r["file"]).read_bytes(), "path": Path(r["file"]).name} if embed
            else r["file"]
            for r in part
        ]  # fmt: skip
        ds = datasets.Dataset.from_dict(
            {
                "image": images,
                "label": [GRADES[int(r["label"])] for r in part],
                "patient_id": [r["patient_id"] for r in part],
            }
        ).cast_column("image", datasets.Image())
        if class_label:
            ds = ds.cast_column("label", datasets.ClassLabel(names=GRADES))
        out[s] = ds
    return datasets.DatasetDict(out)


@pytest.fixture(scope="module")
def knee(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The knee set saved three ways, and its rows."""
    rows = knee_rows(shared_data)
    base = tmp_path_factory.mktemp("hf_knee")
    dd = knee_dict(rows)
    dd.save_to_disk(str(base / "knee_disk"))
    knee_dict(rows, class_label=False).save_to_disk(str(base / "knee_strings"))
    (base / "knee_parquet" / "data").mkdir(parents=True)
    for s, ds in dd.items():  # the Hub's layout: data/<split>-00000-of-00001.parquet
        ds.to_parquet(str(base / "knee_parquet" / "data" / f"{s}-00000-of-00001.parquet"))
    for r in rows:  # imagefolder: <split>/<class>/<file>, the class from the folder name
        dest = base / "knee_imagefolder" / r["split"] / GRADES[int(r["label"])]
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy(r["file"], dest / Path(r["file"]).name)
    return {"rows": rows, "dir": base}


def expected_counts(rows: list[dict[str, str]]) -> dict[str, dict[str, int]]:
    role = {"train": "train", "validation": "val", "test": "test"}
    c = Counter((role[r["split"]], GRADES[int(r["label"])]) for r in rows)
    return {s: {g: c[(s, g)] for g in GRADES} for s in ("train", "val", "test")}


def no_patient_on_two_sides(m: Manifest) -> None:
    assert m.groups is not None
    sides: dict[str, set[str]] = {}
    for g, s in zip(m.groups, m.split, strict=True):
        sides.setdefault(str(g), set()).add(str(s))
    assert all(len(v) == 1 for v in sides.values())


# ---------------------------------------------------------------------------------------------
# reading the three local formats


def test_save_to_disk_counts_and_split_mapping(knee: dict[str, Any]) -> None:
    m = build_manifest(cfg(path=str(knee["dir"] / "knee_disk"), patient_column="patient_id"))
    assert m.classes == GRADES and not m.multilabel and len(m) == 100
    assert m.counts() == expected_counts(knee["rows"])
    assert m.counts()["test"] == {"KL0": 7, "KL1": 1, "KL2": 3, "KL3": 4, "KL4": 4}  # 19 rows
    assert sum(m.counts()["val"].values()) == 23
    assert m.info["splits"] == {"train": "train", "validation": "val", "test": "test"}
    assert m.info["format"] == "save_to_disk" and m.info["grouped"] is True
    assert m.ids[0] == "train/0" and str(m.paths[0]) == f"{knee['dir'] / 'knee_disk'}:train[0]"
    no_patient_on_two_sides(m)
    # the image streams from the dataset's bytes, pixel for pixel the file's
    first = next(r for r in knee["rows"] if r["split"] == "train")
    img = m.images.load(str(m.paths[0]), 1024)
    assert np.array_equal(np.asarray(img), np.asarray(load_image(first["file"])))
    assert isinstance(m.source, HfImages) and m.subset(np.arange(3)).source is m.source


def test_explicit_split_mapping_merges_and_leaves_out(knee: dict[str, Any]) -> None:
    path = str(knee["dir"] / "knee_disk")
    merged = build_manifest(cfg(path=path, splits={"train": "train", "validation": "train",
                                                   "test": "test"}))  # fmt: skip
    exp = expected_counts(knee["rows"])
    assert merged.counts() == {
        "train": {g: exp["train"][g] + exp["val"][g] for g in GRADES},
        "test": exp["test"],
    }
    only = build_manifest(cfg(path=path, splits={"train": "train", "test": "test"}))
    assert len(only) == 100 - sum(exp["val"].values()) and "val" not in only.counts()
    assert not any(i.startswith("validation/") for i in only.ids)


def test_parquet_folder_reads_like_save_to_disk(knee: dict[str, Any]) -> None:
    disk = build_manifest(cfg(path=str(knee["dir"] / "knee_disk")))
    pq = build_manifest(cfg(path=str(knee["dir"] / "knee_parquet")))
    assert pq.info["format"] == "parquet"
    assert pq.ids == disk.ids and pq.counts() == disk.counts()
    assert np.array_equal(pq.labels, disk.labels)
    # same rows, same image bytes: the content-mode image part of the cache key is the same
    assert pq.image_fingerprint() == disk.image_fingerprint()
    # stat mode uses the library's fingerprint of each split instead
    assert pq.image_fingerprint("stat") != disk.image_fingerprint("stat")


def test_imagefolder_labels_from_folder_names(knee: dict[str, Any]) -> None:
    m = build_manifest(cfg(path=str(knee["dir"] / "knee_imagefolder")))
    assert m.info["format"] == "imagefolder" and m.classes == GRADES
    assert m.counts() == expected_counts(knee["rows"])
    # rows hold file paths: read where they are, digested as files
    assert isinstance(m.source, HfImages)
    data, path = m.source.cell(str(m.paths[0]))
    assert data is None and path is not None and Path(path).is_file()
    assert m.images.scan([str(p) for p in m.paths], max_side=64, max_workers=2,
                         progress=False) == []  # fmt: skip


def test_classlabel_and_string_labels_give_the_same_classes(knee: dict[str, Any]) -> None:
    kw: dict[str, Any] = {"patient_column": "patient_id", "split_by": "medprobe"}
    a = build_manifest(cfg(path=str(knee["dir"] / "knee_disk"), **kw))
    b = build_manifest(cfg(path=str(knee["dir"] / "knee_strings"), **kw))
    assert a.classes == b.classes == GRADES
    assert np.array_equal(a.labels, b.labels) and np.array_equal(a.split, b.split)
    # task.classes reorders either way
    rev = build_manifest(cfg(path=str(knee["dir"] / "knee_strings"), classes=GRADES[::-1]))
    assert rev.classes == GRADES[::-1] and np.array_equal(rev.labels, 4 - a.labels[: len(rev)])


def test_patient_level_split_made_by_medprobe(knee: dict[str, Any], tmp_path: Path) -> None:
    """One split only (as many Hub datasets): medprobe splits it, keeping patients whole."""
    rows = knee["rows"]
    ds = datasets.Dataset.from_dict(
        {
            "image": [r["file"] for r in rows],
            "label": [int(r["label"]) for r in rows],
            "patient_id": [r["patient_id"] for r in rows],
        }
    ).cast_column("image", datasets.Image())
    ds.save_to_disk(str(tmp_path / "one"))  # one Dataset, no split name: "train"
    m = build_manifest(cfg(path=str(tmp_path / "one"), patient_column="patient_id",
                           test_fraction=0.3))  # fmt: skip
    assert m.info["splits"] == {"train": "medprobe"}
    assert m.info["split_source"].startswith("stratified patient-level split")
    assert m.classes == ["0", "1", "2", "3", "4"]  # integers: numeric order
    counts = m.counts()
    assert set(counts) == {"train", "test"} and sum(counts["test"].values()) in range(25, 36)
    assert all(v > 0 for v in counts["test"].values())
    # five patients have both knees here; each stays on one side
    pairs = [g for g, n in Counter(r["patient_id"] for r in rows).items() if n == 2]
    assert len(pairs) == 5
    no_patient_on_two_sides(m)
    # without the patient column the rows are split one by one
    flat = build_manifest(cfg(path=str(tmp_path / "one"), test_fraction=0.3))
    assert flat.groups is None and flat.info["grouped"] is False


def test_multilabel_list_column_and_binary_columns(shared_data: Path, tmp_path: Path) -> None:
    with open(shared_data / "T7_cxr_nih" / "labels.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["path"].startswith("nih1000_64px/")][:60]
    findings = sorted({t for r in rows for t in r["label"].split("|")})
    files = [str(shared_data / "T7_cxr_nih" / r["path"]) for r in rows]
    as_list = datasets.Dataset.from_dict(
        {
            "image": files,
            "findings": [r["label"].split("|") for r in rows],
            "patient": [r["patient_id"] for r in rows],
        }  # fmt: skip
    ).cast_column("image", datasets.Image())
    as_list = as_list.cast_column("findings", datasets.List(datasets.ClassLabel(names=findings)))
    as_list.save_to_disk(str(tmp_path / "list"))
    binary = datasets.Dataset.from_dict(
        {"image": files, **{f: [int(f in r["label"].split("|")) for r in rows] for f in findings}}
    ).cast_column("image", datasets.Image())
    binary.save_to_disk(str(tmp_path / "binary"))

    strings = datasets.Dataset.from_dict(
        {"image": files, "findings": [r["label"].split("|") for r in rows]}
    ).cast_column("image", datasets.Image())
    strings.save_to_disk(str(tmp_path / "strings"))

    a = build_manifest(cfg(path=str(tmp_path / "list"), label_column="findings",
                           patient_column="patient"))  # fmt: skip
    b = build_manifest(cfg(path=str(tmp_path / "binary"), label_columns=findings))
    assert a.multilabel and b.multilabel and a.classes == b.classes == findings
    assert np.array_equal(a.labels, b.labels)
    c = build_manifest(cfg(path=str(tmp_path / "strings"), label_column="findings"))
    assert c.multilabel and c.classes == findings and np.array_equal(c.labels, a.labels)
    expected = Counter(t for r in rows for t in r["label"].split("|"))
    assert dict(zip(findings, a.labels.sum(0).tolist(), strict=True)) == dict(expected)
    no_patient_on_two_sides(a)


# ---------------------------------------------------------------------------------------------
# clear one-line errors


def test_unknown_columns_and_splits_name_what_exists(knee: dict[str, Any]) -> None:
    path = str(knee["dir"] / "knee_disk")
    with pytest.raises(ManifestError) as e:
        build_manifest(cfg(path=path, label_column="grade"))
    assert str(e.value) == (
        f"{path}:train: unknown label column 'grade' (columns: image, label, patient_id)"
    )
    with pytest.raises(ManifestError, match=r"unknown patient column task.patient_column "
                       r"'PatientID' \(columns: image, label, patient_id\)"):  # fmt: skip
        build_manifest(cfg(path=path, patient_column="PatientID"))
    with pytest.raises(ManifestError) as e:
        build_manifest(cfg(path=path, splits={"valid": "val", "test": "test"}))
    assert str(e.value) == (
        f"task.splits: {path} has no split 'valid' (its splits: train, validation, test)"
    )
    with pytest.raises(ManifestError, match="no split of .* is used as test"):
        build_manifest(cfg(path=path, splits={"train": "train"}, split_by="dataset"))
    with pytest.raises(ManifestError, match="no such folder, and not a Hugging Face Hub"):
        build_manifest(cfg(path=str(knee["dir"] / "missing")))
    with pytest.raises(ManifestError, match="task=hf needs task.path="):
        build_manifest(cfg())


def test_hub_id_without_network_or_cache_says_how_to_predownload(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # an empty HF_DATASETS_CACHE (tests/conftest.py) and offline: the libraries read
    # HF_HUB_OFFLINE when imported, before conftest sets it, so set their flags too
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(ManifestError) as e:
        build_manifest(cfg(path="medprobe-tests/no-such-dataset"))
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(
        "task.path=medprobe-tests/no-such-dataset: not a local folder, and as a Hugging Face "
        "Hub dataset it is not in the local cache and cannot be downloaded here"
    )
    assert "datasets.load_dataset('medprobe-tests/no-such-dataset')" in msg
    assert "save_to_disk" in msg


def test_rows_without_label(knee: dict[str, Any], tmp_path: Path) -> None:
    rows = [r for r in knee["rows"] if r["split"] == "train"][:20]
    labels = [int(r["label"]) for r in rows]
    labels[3] = labels[7] = -1  # ClassLabel's "no label"
    train = datasets.Dataset.from_dict(
        {"image": [r["file"] for r in rows], "label": labels}
    ).cast_column("image", datasets.Image())
    train = train.cast_column("label", datasets.ClassLabel(names=GRADES))
    hidden = train.map(lambda x: {"label": -1})  # a test split with hidden labels
    datasets.DatasetDict(train=train, test=hidden).save_to_disk(str(tmp_path / "d"))
    path = str(tmp_path / "d")
    with pytest.raises(ManifestError, match=r":test: no row has a label in 'label'"):
        build_manifest(cfg(path=path))
    with pytest.raises(ManifestError, match=r":train, row 3: no label \(set task.on_bad_row"):
        build_manifest(cfg(path=path, splits={"train": "train"}))
    m = build_manifest(cfg(path=path, splits={"train": "train"}, on_bad_row="skip"))
    assert len(m) == 18 and "train/3" not in m.ids and m.info["skipped_rows"] == {"no label": 2}


def test_float_label_column_as_pandas_writes_integers(knee: dict[str, Any], tmp_path: Path) -> None:
    """A float column of whole numbers (pandas' integers with a gap): 2.0 is class '2' (sorted
    numerically), NaN is no label, 0.5 is a bad row; NaN patient ids are no patient id."""
    rows = [r for r in knee["rows"] if r["split"] == "train"][:24]
    labels = [float(r["label"]) for r in rows]
    labels[10] = 12.0  # sorted as a number: 2 before 12
    labels[3] = float("nan")
    patients = [float(r["patient_id"]) for r in rows]
    patients[5] = patients[6] = float("nan")
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "label": datasets.Value("float64"),
            "patient_id": datasets.Value("float64"),
        }
    )
    data = {"image": [r["file"] for r in rows], "label": labels, "patient_id": patients}
    datasets.DatasetDict(train=datasets.Dataset.from_dict(data, features=features)).save_to_disk(
        str(tmp_path / "d")
    )
    path = str(tmp_path / "d")
    with pytest.raises(ManifestError, match=r":train, row 3: no label \(set task.on_bad_row"):
        build_manifest(cfg(path=path, patient_column="patient_id"))
    m = build_manifest(cfg(path=path, patient_column="patient_id", on_bad_row="skip"))
    present = sorted({int(x) for x in labels if x == x})
    assert m.classes == [str(c) for c in present] and m.classes[-2:] == ["2", "12"]
    assert m.info["skipped_rows"] == {"no label": 1}
    groups = dict(zip(m.ids, m.groups, strict=True))
    assert groups["train/5"] == groups["train/6"] == ""
    assert groups["train/0"] == rows[0]["patient_id"]
    labels[3], labels[8] = 1.0, 0.5
    data["label"] = labels
    datasets.DatasetDict(train=datasets.Dataset.from_dict(data, features=features)).save_to_disk(
        str(tmp_path / "e")
    )
    with pytest.raises(ManifestError, match=r":train, row 8: label 0.5 is not a class"):
        build_manifest(cfg(path=str(tmp_path / "e"), on_bad_row="stop", splits={"train": "train"}))


def test_an_image_column_as_label_or_patient_is_one_line(knee: dict[str, Any]) -> None:
    """task.label_column=image was a TypeError traceback (unhashable PngImageFile); as
    task.patient_column every row silently became its own patient (the image's repr)."""
    path = str(knee["dir"] / "knee_disk")
    cols = "image (Image(mode=None, decode=True)), label (ClassLabel(names=['KL0',"
    for key in ("label_column", "patient_column"):
        with pytest.raises(ManifestError) as e:
            build_manifest(cfg(path=path, **{key: "image"}))
        assert str(e.value).startswith(
            f"{path}: task.{key}='image' is a column of Image(mode=None, decode=True) values, "
            f"not class names / integers / ids (columns: {cols}"
        )


def test_an_empty_saved_split_is_named(knee: dict[str, Any], tmp_path: Path) -> None:
    """datasets cannot load back a split saved with 0 rows: the message was the library's
    "IndexError: list index out of range" and "expected save_to_disk output"."""
    dd = datasets.load_from_disk(str(knee["dir"] / "knee_disk"))
    dd["validation"] = dd["validation"].select([])
    dd.save_to_disk(str(tmp_path / "d"))
    with pytest.raises(ManifestError) as e:
        build_manifest(cfg(path=str(tmp_path / "d")))
    assert str(e.value) == (
        f"task.path={tmp_path / 'd'}: split(s) validation saved with 0 rows (save_to_disk "
        "writes no data file for an empty split and datasets cannot load it back); drop the "
        "empty split before save_to_disk"
    )


def test_a_label_column_typed_differently_per_split_is_named(
    knee: dict[str, Any], tmp_path: Path
) -> None:
    """ClassLabel in train, strings in test: int('KL0') was a ValueError traceback."""
    dd = datasets.load_from_disk(str(knee["dir"] / "knee_disk"))
    dd["test"] = dd["test"].cast_column("label", datasets.Value("string"))  # '0'..'4'
    dd.save_to_disk(str(tmp_path / "d"))
    with pytest.raises(ManifestError) as e:
        build_manifest(cfg(path=str(tmp_path / "d")))
    assert str(e.value) == (
        f"{tmp_path / 'd'}: column 'label' is ClassLabel(names={GRADES}) in split 'train' but "
        "Value('string') in split 'test'; give it one type in every used split (e.g. "
        "cast_column) or leave a split out with task.splits"
    )
    dd["test"] = dd["test"].cast_column("label", datasets.ClassLabel(names=GRADES))
    dd["test"] = dd["test"].cast_column("patient_id", datasets.Value("large_string"))
    dd.save_to_disk(str(tmp_path / "e"))  # string vs large_string: read alike
    assert len(build_manifest(cfg(path=str(tmp_path / "e"), patient_column="patient_id"))) == 100


def test_label_columns_of_text_zeros_and_ones(knee: dict[str, Any], tmp_path: Path) -> None:
    """ "0"/"1" strings (a CSV read as text) were bad rows: "values ['0', '1'] are not 0/1"."""
    rows = [r for r in knee["rows"] if r["split"] == "train"][:20]
    grade = [int(r["label"]) for r in rows]
    data = {"image": [r["file"] for r in rows],
            "kl2": [" 1" if g >= 2 else "0" for g in grade],
            "kl3": ["1" if g >= 3 else "0" for g in grade]}  # fmt: skip
    data["kl3"][4] = ""  # empty: no label
    ds = datasets.Dataset.from_dict(data).cast_column("image", datasets.Image())
    datasets.DatasetDict(train=ds).save_to_disk(str(tmp_path / "d"))
    m = build_manifest(cfg(path=str(tmp_path / "d"), label_columns=["kl2", "kl3"],
                           on_bad_row="skip"))  # fmt: skip
    assert m.classes == ["kl2", "kl3"] and m.info["skipped_rows"] == {"no label": 1}
    keep = [i for i in range(20) if i != 4]
    expected = [[int(grade[i] >= 2), int(grade[i] >= 3)] for i in keep]
    assert m.labels.tolist() == expected


# ---------------------------------------------------------------------------------------------
# end to end: the CLI, the cache key


def test_config_names_the_task_after_the_dataset(compose: Compose) -> None:
    c = compose("task=hf", "task.path=/data/knee_hf/")
    assert (c.task.name, c.task.kind) == ("knee_hf", "hf")
    assert compose("task=hf", "task.path=org/chest-xray").task.name == "chest-xray"
    assert compose("task=hf", "task.path=org/x", "task.name=mine").task.name == "mine"


def test_a_dot_path_names_the_task_after_the_folder(
    compose: Compose, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """task.path=.. gave the task name '..' (refused as a folder name), task.path=. 'hf'."""
    (tmp_path / "knee_hf" / "train").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "knee_hf" / "train")
    assert compose("task=hf", "task.path=..").task.name == "knee_hf"
    assert compose("task=csv", "data_root=.").task.name == "train"


def test_run_end_to_end(knee: dict[str, Any], tiny_clip: Path, tmp_path: Path) -> None:
    path = knee["dir"] / "knee_disk"
    common = ["task=hf", f"task.path={path}", "task.patient_column=patient_id", "model=clip",
              f"model.hf_id={tiny_clip}", "tracker=none", "bootstrap.n=50", "progress=false",
              f"cache_dir={tmp_path / 'cache'}"]  # fmt: skip
    proc = run_medprobe(tmp_path, "run", *common, "output_dir=run1")
    r1 = json.loads((tmp_path / "run1" / "results.json").read_text())
    assert r1["task"] == "knee_disk" and r1["task_kind"] == "hf"
    assert r1["counts"]["test"] == 19 and r1["cache"]["cache_hit"] is False
    assert r1["task_info"]["dataset"] == str(path) and r1["task_info"]["format"] == "save_to_disk"
    assert "auroc_macro" in proc.stdout
    with open(tmp_path / "run1" / "predictions.csv") as f:
        preds = list(csv.DictReader(f))
    assert len(preds) == 19 and all(p["id"].startswith("test/") for p in preds)


def test_cache_key_is_stable_and_follows_the_rows(
    knee: dict[str, Any], tiny_clip: Path, tmp_path: Path, compose: Compose
) -> None:
    from medprobe.pipeline.run import run

    path = knee["dir"] / "knee_disk"
    common = ["task=hf", f"task.path={path}", "task.patient_column=patient_id", "model=clip",
              f"model.hf_id={tiny_clip}", "tracker=none", "bootstrap.n=20", "progress=false",
              f"cache_dir={tmp_path / 'cache'}"]  # fmt: skip
    first = run(compose(*common, f"output_dir={tmp_path / 'run1'}")).result
    assert first.cache.cache_hit is False and first.counts.test == 19
    # the same dataset and rows again: the same key, a hit
    again = run(compose(*common, f"output_dir={tmp_path / 'run2'}")).result
    assert again.cache.cache_key == first.cache.cache_key and again.cache.cache_hit is True
    assert again.metrics == first.metrics
    # other rows selected (validation left out): another key
    fewer = run(compose(*common, "task.splits={train: train, test: test}",
                        f"output_dir={tmp_path / 'run3'}")).result  # fmt: skip
    assert fewer.cache.cache_key != first.cache.cache_key and fewer.cache.cache_hit is False
    assert fewer.counts.test == 19


def test_unreadable_image_row_is_named_by_its_locator(knee: dict[str, Any], tmp_path: Path) -> None:
    rows = [r for r in knee["rows"] if r["split"] == "train"][:6]
    images: list[Any] = [{"bytes": Path(r["file"]).read_bytes(), "path": None} for r in rows]
    images[2] = {"bytes": Path(rows[2]["file"]).read_bytes()[:300], "path": None}  # truncated
    ds = datasets.Dataset.from_dict(
        {"image": images, "label": [int(r["label"]) for r in rows]}
    ).cast_column("image", datasets.Image())
    ds.save_to_disk(str(tmp_path / "bad"))
    m = build_manifest(cfg(path=str(tmp_path / "bad"), test_fraction=0.5))
    bad = m.images.scan([str(p) for p in m.paths], max_side=1024, max_workers=2, progress=False)
    assert [b[0] for b in bad] == [f"{tmp_path / 'bad'}:train[2]"]
    assert bad[0][1].startswith("cannot decode")


def test_unreadable_row_is_skipped_by_a_run(
    knee: dict[str, Any], tiny_clip: Path, tmp_path: Path, compose: Compose
) -> None:
    """data.on_error=skip leaves a broken row out of a run and names it in results.json."""
    from medprobe.pipeline.run import run

    dd = knee_dict(knee["rows"])
    test = dd["test"].cast_column("image", datasets.Image(decode=False))
    broken = test.map(
        lambda x, i: {"image": {"bytes": x["image"]["bytes"][:300], "path": None}} if i == 4 else x,
        with_indices=True,
    ).cast_column("image", datasets.Image())
    datasets.DatasetDict(train=dd["train"], test=broken).save_to_disk(str(tmp_path / "d"))
    common = ["task=hf", f"task.path={tmp_path / 'd'}", "model=clip", f"model.hf_id={tiny_clip}",
              "tracker=none", "bootstrap.n=20", "progress=false", f"cache_dir={tmp_path / 'c'}"]  # fmt: skip
    r = run(compose(*common, "data.on_error=skip", f"output_dir={tmp_path / 'o'}")).result
    assert r.counts.test == 18 and r.counts.skipped_images == 1
    assert [s[0] for s in r.cache.skipped_images] == [f"{tmp_path / 'd'}:test[4]"]
