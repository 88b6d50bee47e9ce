"""Issue 13 wiring in the pipeline: the label budget (items 6), the resampling unit and the
selection metric that follows the task (item 5), checked against plain counting."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medprobe.config.schema import (
    AurocCI,
    BootstrapConfig,
    Config,
    FractionOf,
    ProbeConfig,
    ResamplingUnit,
    SelectionMetric,
    TaskMetric,
)
from medprobe.data.manifest import Manifest
from medprobe.data.splits import carve_validation, subsample_train
from medprobe.errors import ConfigError
from medprobe.pipeline.probing import resolved_probe_config
from medprobe.pipeline.rows import bootstrap_groups, probe_rows


def _manifest(*, with_val: bool, groups: bool = False) -> Manifest:
    n = 400
    y = np.arange(n) % 4
    split = np.array(["train"] * 240 + (["val"] * 80 if with_val else ["train"] * 80)
                     + ["test"] * 80)  # fmt: skip
    ids = [f"i{k}" for k in range(n)]
    g = np.array([f"p{k // 2}" for k in range(n)]) if groups else None
    return Manifest("toy", ids, [Path(i) for i in ids], y, ["a", "b", "c", "d"], split, g)


@pytest.mark.parametrize("with_val", [True, False])
def test_pool_budget_counts_fit_and_validation_rows(with_val: bool) -> None:
    m = _manifest(with_val=with_val)
    full = probe_rows(m, 0.25, 1.0, 0)
    for f in (0.1, 0.5):
        pool = probe_rows(m, 0.25, f, 0)
        old = probe_rows(m, 0.25, f, 0, fraction_of="fit")
        n_pool = len(full.fit) + len(full.val)
        # pool: about f of ALL labelled rows; fit: validation rows kept in full
        assert len(pool.fit) + len(pool.val) == pytest.approx(f * n_pool, abs=4)
        assert len(old.val) == len(full.val) and len(old.fit) == pytest.approx(
            f * len(full.fit), abs=4)  # fmt: skip
        assert not set(pool.fit) & set(pool.val) and not set(pool.val) & set(pool.test)
        train = np.flatnonzero(m.split == "train")
        ids = m.ids  # rows are taken in id order (issue 16.5): "i10" before "i2"
        if with_val:  # plain recomputation: each split subsampled on its own
            val = np.flatnonzero(m.split == "val")
            assert np.array_equal(pool.fit, subsample_train(m.labels, train, f, 0, ids=ids))
            assert np.array_equal(pool.val, subsample_train(m.labels, val, f, 0, ids=ids))
        else:  # the pool subsampled, then validation carved from it
            sub = subsample_train(m.labels, train, f, 0, ids=ids)
            fit, val = carve_validation(m.labels, None, sub, 0.25, 0, ids=ids)
            assert np.array_equal(pool.fit, fit) and np.array_equal(pool.val, val)
    one = probe_rows(m, 0.25, 1.0, 0, fraction_of="fit")
    assert np.array_equal(one.fit, full.fit) and np.array_equal(one.val, full.val)
    with pytest.raises(ConfigError, match="fraction_of"):
        probe_rows(m, 0.25, 0.5, 0, fraction_of="all")


def test_resampling_unit_auto_follows_the_task() -> None:
    plain, grouped = _manifest(with_val=True), _manifest(with_val=True, groups=True)
    assert bootstrap_groups(plain, "auto") is None and bootstrap_groups(grouped, "image") is None
    g = bootstrap_groups(grouped, "auto")
    assert g is not None and list(g[:4]) == ["p0", "p0", "p1", "p1"]
    assert np.array_equal(bootstrap_groups(grouped, "patient"), g)
    with pytest.raises(ConfigError, match="no patient ids"):
        bootstrap_groups(plain, "patient")
    grouped.groups[[0, 1]] = ""  # unknown patients: each image its own group
    g2 = bootstrap_groups(grouped, "auto")
    assert g2 is not None and g2[0] != g2[1] and g2[0] == "(no patient id) i0"


def test_defaults_and_selection_metric_follow_the_task() -> None:
    assert (BootstrapConfig().unit, BootstrapConfig().auroc_ci) == (
        ResamplingUnit.auto, AurocCI.delong_logit)  # fmt: skip
    assert ProbeConfig().selection_metric is None and ProbeConfig().fraction_of == FractionOf.pool
    cfg = Config()
    cfg.probe.name = "logistic"
    cfg.task.metric = TaskMetric.f1_macro
    assert resolved_probe_config(cfg).selection_metric == "f1_macro"
    assert cfg.probe.selection_metric is None  # the config itself is not changed
    cfg.probe.selection_metric = SelectionMetric.neg_log_loss
    assert resolved_probe_config(cfg).selection_metric == "neg_log_loss"


def test_paper_presets_select_by_their_primary_metric() -> None:
    """T1 and T2 report macro F1: with the default selection metric their C is chosen by it."""
    from medprobe.config.schema import T1TaskConfig, T2TaskConfig

    for schema in (T1TaskConfig, T2TaskConfig):
        cfg = Config(task=schema())
        assert resolved_probe_config(cfg).selection_metric == "f1_macro"
