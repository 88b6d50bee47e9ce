"""The logistic probe: C chosen on validation rows, standardisation on train, K kept fixed."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from medprobe.probe import LogisticProbe, ProbeError


def blobs(n: int, k: int, d: int, seed: int, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    centers = rng.normal(size=(k, d)) * scale
    return (centers[y] + rng.normal(size=(n, d)) + 50.0).astype(np.float32), y


def test_chosen_c_maximises_validation_auroc_and_equals_sklearn() -> None:
    X, y = blobs(300, 3, 20, 0, scale=0.4)
    Xv, yv = blobs(90, 3, 20, 1, scale=0.4)
    p = LogisticProbe(n_classes=3, C_grid=[1e-3, 1e-2, 1e-1, 1.0]).fit(X, y, Xv, yv)
    scores = [s["score"] for s in p.selection_]
    assert [s["C"] for s in p.selection_] == [1e-3, 1e-2, 1e-1, 1.0]
    assert p.C_ == p.selection_[int(np.argmax(scores))]["C"]
    assert p.val_score_ == max(scores)
    # same optimum as a cold scikit-learn fit at the chosen C on train-standardised features;
    # the probe warm-starts along the C path, and lbfgs stops at gradient tol 1e-4, so the two
    # approximate solutions agree to ~1e-3 in probability, not to machine precision
    sc = StandardScaler().fit(X)
    ref = LogisticRegression(C=p.C_, max_iter=1000).fit(sc.transform(X), y)
    ours, theirs = p.predict_proba(Xv), ref.predict_proba(sc.transform(Xv))
    np.testing.assert_allclose(ours, theirs, atol=5e-3)
    np.testing.assert_array_equal(ours.argmax(1), theirs.argmax(1))


def test_standardisation_uses_train_statistics_only() -> None:
    X, y = blobs(200, 2, 5, 0)
    Xv, yv = blobs(60, 2, 5, 1)
    p = LogisticProbe(n_classes=2, C_grid=[1.0]).fit(X, y, Xv, yv)
    np.testing.assert_allclose(p.scaler_.mean_, X.astype(np.float64).mean(0), rtol=1e-6)
    shifted = LogisticProbe(n_classes=2, C_grid=[1.0]).fit(X, y, Xv + 100.0, yv)
    np.testing.assert_allclose(shifted.scaler_.mean_, p.scaler_.mean_)


def test_class_missing_from_train_keeps_k_columns() -> None:
    X, y = blobs(120, 3, 8, 0)
    keep = y != 2
    Xv, yv = blobs(30, 3, 8, 1)
    p = LogisticProbe(n_classes=4, C_grid=[1.0]).fit(X[keep], y[keep], Xv, yv)
    proba = p.predict_proba(Xv)
    assert proba.shape == (30, 4)
    assert np.all(proba[:, 2:] == 0.0)
    np.testing.assert_allclose(proba.sum(1), 1.0)


def test_multilabel_one_vs_rest() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 6)).astype(np.float32)
    Y = np.stack([X[:, 0] > 0, X[:, 1] > 0.5, X[:, 2] < -0.5], axis=1).astype(np.uint8)
    p = LogisticProbe(n_classes=3, multilabel=True, C_grid=[0.1, 10.0]).fit(
        X[:150], Y[:150], X[150:], Y[150:]
    )
    proba = p.predict_proba(X[150:])
    assert proba.shape == (50, 3)
    assert ((proba > 0.5) == Y[150:]).mean() > 0.9


def test_probe_errors_are_clear() -> None:
    X, y = blobs(40, 2, 4, 0)
    with pytest.raises(ProbeError, match="validation rows"):
        LogisticProbe(n_classes=2).fit(X, y, X[:0], y[:0])
    with pytest.raises(ProbeError, match="single class"):
        LogisticProbe(n_classes=2).fit(X, np.zeros(40, int), X, y)
    with pytest.raises(ProbeError, match="validation rows hold a single class"):
        LogisticProbe(n_classes=2).fit(X, y, X[:5], np.zeros(5, int))
    with pytest.raises(ValueError, match="selection_metric"):
        LogisticProbe(n_classes=2, selection_metric="auc")


def test_from_config_reads_attributes_and_takes_str_enums() -> None:
    """A typed config (dataclass attributes, ``StrEnum`` values) builds the same probe."""
    from enum import StrEnum
    from types import SimpleNamespace

    from medprobe.probe import from_config

    class Backend(StrEnum):
        TORCH = "torch"

    class Metric(StrEnum):
        F1 = "f1_macro"

    class Weight(StrEnum):
        BALANCED = "balanced"

    cfg = SimpleNamespace(C_grid=[0.1, 1], class_weight=Weight.BALANCED, max_iter=50,
                          selection_metric=Metric.F1, backend=Backend.TORCH, device="cpu",
                          dtype="float64")  # fmt: skip
    p = from_config(cfg, n_classes=2, multilabel=False, seed=3)
    assert (p.C_grid, p.class_weight, p.max_iter, p.selection_metric, p.seed) == (
        [0.1, 1.0],
        "balanced",
        50,
        "f1_macro",
        3,
    )
    assert (p.backend, p.device, p.dtype) == ("torch", "cpu", "float64")
    assert all(type(v) is str for v in (p.class_weight, p.selection_metric, p.backend))
    X, y = blobs(60, 2, 4, 0)
    assert p.fit(X, y, X, y).C_ in (0.1, 1.0)
    with pytest.raises(AttributeError):  # fields the config does not have are not defaulted
        from_config(SimpleNamespace(C_grid=[1.0]), n_classes=2, multilabel=False, seed=0)
