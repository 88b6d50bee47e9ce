"""All dataset adapters together (medprobe/data/tasks/__init__.py registers them): the eight
paper tasks registered with their metric, prompt and classes; missing roots and unknown
options fail in one line. Each adapter's own tests: test_t1_crc.py ... test_t8_knee.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import REPO
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError
from task_helpers import T1_CLASSES, build, cfg, composed_prompt, typed

from medprobe.data.manifest import ManifestError
from medprobe.data.tasks import (
    t1_crc,
    t2_pannuke,
    t3_isic2018,
    t4_isic2020,
    t5_dr,
    t6_glaucoma,
    t8_knee,
)
from medprobe.registry import TASKS


def test_all_eight_tasks_registered_with_metric_classes_and_prompt() -> None:
    metrics = {f"t{k}": ("f1_macro" if k <= 2 else "auroc_macro") for k in range(1, 9)}
    prompts = {
        "t1": "pathology",
        "t2": "pathology",
        "t3": "dermatology",
        "t4": "dermatology",
        "t5": "ophthalmology",
        "t6": "ophthalmology",
        "t7": "chest_xray",
        "t8": "knee_xray",
    }
    adapters = {"t1": t1_crc, "t2": t2_pannuke, "t3": t3_isic2018, "t4": t4_isic2020,
                "t5": t5_dr, "t6": t6_glaucoma, "t8": t8_knee}  # fmt: skip
    for task, metric in metrics.items():
        assert task in TASKS
        c = typed(task, Path("/data"))
        assert (c.name, c.kind, c.metric) == (task, task, metric)
        assert composed_prompt(task) == prompts[task]
        assert (REPO / "conf" / "prompt" / f"{prompts[task]}.yaml").is_file()
        # the class list is the adapter's (T7's come from the data): not in the config at all
        assert not hasattr(c, "classes")
        assert "classes" not in OmegaConf.load(REPO / "conf" / "task" / f"{task}.yaml")
        if task in adapters:
            assert len(adapters[task].CLASSES) >= 2
    assert t5_dr.CLASSES[4] == "proliferative"
    assert t1_crc.CLASSES == T1_CLASSES


def test_missing_root_and_unknown_option_are_one_line_errors(tmp_path: Path) -> None:
    no_root = cfg("t1", tmp_path)
    no_root.root = None
    with pytest.raises(ManifestError, match="task=t1 needs the dataset folder"):
        TASKS.get("t1")(no_root, None)
    with pytest.raises(ManifestError, match="dataset folder not found"):
        build("t4", tmp_path / "nope")
    # an unknown option fails where the config is built (at compose time), naming the valid ones
    with pytest.raises(ConfigKeyError, match=r"Key 'plip' not in 'T2Options\(plip_counting\)'"):
        build("t2", tmp_path, options={"plip": True})
    with pytest.raises(ConfigKeyError, match=r"Key 'image_dir' not in 'T5TaskConfig\("):
        build("t5", tmp_path, image_dir="x")  # a key of T3/T4 only
    with pytest.raises(ValidationError, match=r"expected one of \[train, drop\]"):
        build("t5", tmp_path, options={"eyepacs_test": "keep"})
