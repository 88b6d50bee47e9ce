"""The one C-selection loop of ``LogisticProbe``, over a scripted solver backend.

The backend returns given validation probabilities per C, so the loop's rules are checked
exactly: C walked in increasing order, the first maximum of the validation score kept (a later
C must beat it by more than ``TIE_TOLERANCE``), the converged flag, iteration count and solver
records collected over every C, the chosen C's fitted probe kept, the backend always closed.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pytest
from sklearn.preprocessing import StandardScaler

from medprobe import metrics
from medprobe.probe import (
    SOLVERS,
    TIE_TOLERANCE,
    LogisticProbe,
    SklearnSolver,
    SolverSettings,
    Step,
    TorchLBFGSSolver,
)

Y_VAL = np.array([0, 1, 0, 1, 1, 0])


def proba(q: float) -> np.ndarray:
    """(6, 2) probabilities giving the true class of every validation row probability ``q``."""
    p = np.where(Y_VAL[:, None] == np.arange(2), q, 1.0 - q)
    return p.astype(np.float64)


class Constant:
    """A fitted probe that predicts one row of probabilities (tags which C it came from)."""

    def __init__(self, C: float) -> None:
        self.C = C

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return np.full((len(X), 2), self.C)


class Scripted:
    """Backend with scripted validation probabilities, iterations and convergence per C."""

    script: ClassVar[dict[float, tuple[float, int, bool]]] = {}
    events: ClassVar[list[str]] = []
    fail_at: ClassVar[float | None] = None

    def __init__(
        self, settings: SolverSettings, X: np.ndarray, y: np.ndarray, X_val: np.ndarray
    ) -> None:
        assert settings.n_classes == 2 and len(X_val) == len(Y_VAL)
        self.scaler = StandardScaler().fit(X)
        self.events.append("open")

    def fit(self, C: float) -> Step:
        self.events.append(f"fit {C}")
        if C == self.fail_at:
            raise RuntimeError("solver failed")
        q, n_iter, converged = self.script[C]
        return Step(proba(q), Constant(C), n_iter, converged, {"C": C, "n_iter": n_iter})

    def close(self) -> None:
        self.events.append("close")


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> type[Scripted]:
    monkeypatch.setitem(SOLVERS, "sklearn", Scripted)
    monkeypatch.setattr(Scripted, "events", [])
    monkeypatch.setattr(Scripted, "fail_at", None)
    return Scripted


def fit(grid: list[float], probe: LogisticProbe | None = None) -> LogisticProbe:
    X = np.arange(20, dtype=np.float32).reshape(10, 2)
    y = np.arange(10) % 2
    probe = probe or LogisticProbe(n_classes=2, C_grid=grid, selection_metric="neg_log_loss")
    return probe.fit(X, y, np.zeros((len(Y_VAL), 2), np.float32), Y_VAL)


def score(q: float) -> float:
    return -metrics.log_loss(Y_VAL, proba(q), multilabel=False)


def test_first_maximum_wins_and_ties_go_to_the_smaller_c(scripted: type[Scripted]) -> None:
    q_tie = 0.8 * (1 + 1e-15)  # a score within TIE_TOLERANCE of 0.8's, above it
    assert 0 < score(q_tie) - score(0.8) < TIE_TOLERANCE
    scripted.script = {
        0.01: (0.6, 3, True),
        0.1: (0.8, 5, True),
        1.0: (0.8, 9, False),  # the same score: a tie
        10.0: (q_tie, 4, True),  # higher by less than the tolerance: still a tie
        100.0: (0.7, 2, True),
    }
    p = fit([100.0, 1.0, 0.01, 10.0, 0.1])  # any order: walked increasing
    assert scripted.events == ["open", "fit 0.01", "fit 0.1", "fit 1.0", "fit 10.0",
                               "fit 100.0", "close"]  # fmt: skip
    assert p.selection_ == [{"C": C, "score": score(scripted.script[C][0])} for C in sorted(scripted.script)]  # fmt: skip
    assert p.C_ == 0.1 and p.val_score_ == score(0.8)
    assert p.predict_proba(np.zeros((3, 2)))[0, 0] == 0.1  # the chosen C's fitted probe
    assert p.converged_ is False and p.n_iter_max_ == 9
    assert p.solver_ == [{"C": C, "n_iter": scripted.script[C][1]} for C in sorted(scripted.script)]  # fmt: skip
    np.testing.assert_array_equal(p.scaler_.mean_, [9.0, 10.0])


def test_a_clear_later_maximum_wins(scripted: type[Scripted]) -> None:
    q = 0.8 * (1 + 1e-9)
    assert score(q) - score(0.8) > TIE_TOLERANCE
    scripted.script = {0.1: (0.8, 1, True), 1.0: (q, 1, True), 10.0: (0.8, 1, True)}
    p = fit([0.1, 1.0, 10.0])
    assert p.C_ == 1.0 and p.val_score_ == score(q) and p.converged_
    assert p.n_iter_max_ == 1


def test_the_backend_is_closed_after_a_failure_and_state_is_reset(
    scripted: type[Scripted],
) -> None:
    scripted.script = {0.1: (0.8, 7, False), 1.0: (0.9, 1, True)}
    scripted.fail_at = 1.0
    with pytest.raises(RuntimeError, match="solver failed"):
        fit([0.1, 1.0])
    assert scripted.events == ["open", "fit 0.1", "fit 1.0", "close"]
    p = fit([0.1])
    assert not p.converged_ and p.n_iter_max_ == 7
    scripted.script = {0.1: (0.8, 2, True)}
    fit([], p)  # a refit of the same probe starts from a clean slate
    assert p.converged_ and p.n_iter_max_ == 2 and p.selection_ == [{"C": 0.1, "score": score(0.8)}]
    assert p.solver_ == [{"C": 0.1, "n_iter": 2}]


def test_backends_are_registered_by_config_name() -> None:
    assert SOLVERS == {"sklearn": SklearnSolver, "torch": TorchLBFGSSolver}
    with pytest.raises(ValueError, match="probe.backend 'jax' unknown"):
        LogisticProbe(n_classes=2, backend="jax")
