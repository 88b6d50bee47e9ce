"""Building a job: checks that need no model run first (issue 14.4, issue 16.8)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from medprobe.config import conf_dir, register_configs
from medprobe.errors import ConfigError, DataError
from medprobe.pipeline.job import build_job, default_output_dir


def _cfg(*overrides: str):  # type: ignore[no-untyped-def]
    register_configs()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def _dataset(tmp: Path, shared_data: Path) -> Path:
    """A copy of the real knee labels.csv whose first image is a symlink out of the root."""
    src = shared_data / "T8_knee_kl"
    root = tmp / "knee"
    shutil.copytree(src, root)
    first = next(line.split(",")[0] for line in (root / "labels.csv").read_text().splitlines()[1:])
    outside = tmp / "elsewhere.png"
    shutil.move(root / first, outside)
    (root / first).symlink_to(outside)
    return root


def test_a_symlink_out_of_the_root_is_refused_before_any_model(
    tmp_path: Path, shared_data: Path
) -> None:
    root = _dataset(tmp_path, shared_data)
    common = ["task=csv", f"data_root={root}", f"output_dir={tmp_path / 'out'}", "tracker=none"]
    with pytest.raises(DataError, match=r"1 image path\(s\) lead outside the dataset root") as e:
        build_job(_cfg(*common))
    # the line names the key that reads them anyway
    assert "medprobe refuses to read them unless data.allow_outside_root=true:" in str(e.value)
    job = build_job(_cfg(*common, "data.allow_outside_root=true"))
    (outside,) = job.manifest.info["outside_root"]
    assert outside[1] == str((tmp_path / "elsewhere.png").resolve())


def test_a_single_class_test_split_fails_before_the_model_is_built(
    tmp_path: Path, shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "knee"
    shutil.copytree(shared_data / "T8_knee_kl", root)
    rows = (root / "labels.csv").read_text().splitlines()
    out = [rows[0] + ",split"]
    test_patients = {r.split(",")[2] for r in rows[1:] if r.split(",")[1] == "0"}
    for r in rows[1:]:  # path,label,patient_id: every knee of a KL-0 patient is in test
        _, label, patient = r.split(",")
        if patient in test_patients and label != "0":
            continue  # (keep the split patient-level: that patient's other knee is left out)
        out.append(r + (",test" if patient in test_patients else ",train"))
    (root / "labels.csv").write_text("\n".join(out) + "\n")
    from medprobe.registry import EXTRACTORS

    def no_model(*a: object, **k: object) -> None:
        raise AssertionError("the extractor was built before the split check")

    monkeypatch.setattr(EXTRACTORS, "get", lambda name: no_model)
    with pytest.raises(ConfigError, match="the test split holds a single class"):
        build_job(_cfg("task=csv", f"data_root={root}", "tracker=none"))


def test_default_output_dir_keys_on_identity() -> None:
    from medprobe.config import to_typed

    cfg = to_typed(_cfg("model=plip", "task=csv", "data_root=/data/knee_kl"))
    assert default_output_dir(cfg).parts[:3] == ("outputs", "knee_kl", "plip")
