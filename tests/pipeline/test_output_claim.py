"""A run folder holds one job's files (issue 14, item 2)."""

from __future__ import annotations

import json
from pathlib import Path

import filelock
import numpy as np
import pytest
from helpers import Compose

from medprobe.config import to_typed
from medprobe.errors import ConfigError, ResultsError
from medprobe.hashing import file_sha256
from medprobe.pipeline.job import CLAIM_FILE, claim_output_dir, job_key
from medprobe.results import Predictions, read_predictions, write_predictions


def test_job_key_ignores_where_a_job_writes_not_what_it_computes(compose: Compose) -> None:
    a = job_key(to_typed(compose("output_dir=/tmp/x", "progress=false", "tracker=none")))
    b = job_key(to_typed(compose("output_dir=/tmp/y")))
    assert a == b
    assert job_key(to_typed(compose("layer=4"))) != a
    assert job_key(to_typed(compose("seed=1"))) != a


def test_a_folder_with_another_jobs_results_is_refused(tmp_path: Path) -> None:
    (tmp_path / "results.json").write_text(json.dumps(
        {"job_key": "other", "task": "demo", "model": "clip", "layer": 4}))  # fmt: skip
    with pytest.raises(ConfigError, match=r"holds results.json of another job \(demo / clip / "
                       r"layer 4\); choose another output_dir, or overwrite=true"):  # fmt: skip
        claim_output_dir(tmp_path, "mine")
    claim_output_dir(tmp_path, "other").release()  # a rerun of the same job may
    claim_output_dir(tmp_path, "mine", overwrite=True).release()


def test_a_folder_in_use_by_a_running_job_is_refused(tmp_path: Path) -> None:
    with filelock.FileLock(str(tmp_path / CLAIM_FILE)):
        with pytest.raises(ConfigError, match="in use by another running job"):
            claim_output_dir(tmp_path, "k")
    claim_output_dir(tmp_path, "k").release()


def test_predictions_of_another_job_are_refused_by_every_reader(tmp_path: Path) -> None:
    preds = Predictions(["a", "b"], ["test", "test"], np.array([0, 1]),
                        np.array([[0.9, 0.1], [0.2, 0.8]]), ["x", "y"], False)  # fmt: skip
    path = write_predictions(tmp_path, preds)
    assert not list(tmp_path.glob("*.tmp"))  # written atomically
    digest = file_sha256(path)
    assert read_predictions(tmp_path, ["x", "y"], False, digest).ids == ["a", "b"]
    other = Predictions(["a", "b"], ["test", "test"], np.array([0, 1]),
                        np.array([[0.5, 0.5], [0.5, 0.5]]), ["x", "y"], False)  # fmt: skip
    write_predictions(tmp_path, other)
    with pytest.raises(ResultsError, match="is not the predictions of .*mixes two jobs"):
        read_predictions(tmp_path, ["x", "y"], False, digest)
