"""Issue 13, item 9: a C's validation score does not depend on the other Cs of the grid.

Before, each C warm-started from the previous one and at large C the warm start already met
lbfgs' tolerance (0 iterations), copying the smaller C's solution. Each C is now fitted cold,
so the path equals fitting every C on its own (the independent computation)."""

from __future__ import annotations

import numpy as np
import pytest

from medprobe.probe import LogisticProbe


def _data(k: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(3)
    n, d = 160, 40
    y = rng.integers(0, k, n)
    X = rng.normal(size=(n, d)) + 0.8 * np.eye(k, d)[y]
    return X[:110].astype(np.float32), y[:110], X[110:].astype(np.float32), y[110:]


@pytest.mark.parametrize("k", [2, 3])
def test_path_scores_equal_single_c_fits_in_any_order(k: int) -> None:
    X, y, Xv, yv = _data(k)
    grid = [1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0]
    full = LogisticProbe(n_classes=k, C_grid=grid, selection_metric="neg_log_loss").fit(
        X, y, Xv, yv
    )
    alone = {
        C: LogisticProbe(n_classes=k, C_grid=[C], selection_metric="neg_log_loss")
        .fit(X, y, Xv, yv).selection_[0]["score"]
        for C in grid
    }  # fmt: skip
    assert {s["C"]: s["score"] for s in full.selection_} == alone
    rev = LogisticProbe(n_classes=k, C_grid=grid[::-1], selection_metric="neg_log_loss")
    assert rev.fit(X, y, Xv, yv).selection_ == full.selection_
    assert full.n_iter_max_ > 0 and all(r["n_iter"] > 0 for r in full.solver_)


def test_fit_shows_progress_over_the_c_grid(capsys: pytest.CaptureFixture[str]) -> None:
    X, y, Xv, yv = _data(2)
    LogisticProbe(n_classes=2, C_grid=[0.1, 1.0], progress=True).fit(X, y, Xv, yv)
    assert "probe C grid" in capsys.readouterr().err
    LogisticProbe(n_classes=2, C_grid=[0.1, 1.0]).fit(X, y, Xv, yv)
    assert "probe C grid" not in capsys.readouterr().err


def test_torch_path_is_order_independent_too() -> None:
    X, y, Xv, yv = _data(3)
    grid = [1e-2, 1.0, 100.0]

    def probe(g: list[float]) -> LogisticProbe:
        return LogisticProbe(n_classes=3, C_grid=g, backend="torch", device="cpu",
                             dtype="float64", selection_metric="neg_log_loss")  # fmt: skip

    full = probe(grid).fit(X, y, Xv, yv).selection_
    assert full == [probe([C]).fit(X, y, Xv, yv).selection_[0] for C in grid]
