"""The torch backend of the logistic probe: scikit-learn's objective, minimiser and selection.

Reference: scikit-learn's ``LogisticRegression`` (lbfgs, l2, unpenalised intercept) and
``OneVsRestClassifier`` for multi-label. Tolerances, all measured with margin (typical values
in brackets): solver coefficients and intercepts atol 2e-6 [5e-7] at tol 1e-10 (both solvers
then stop on scipy's / our 64-epsilon change-in-objective rule with a gradient near 1e-8, so
they agree to about gradient / smallest curvature, not to machine precision); objective values
1e-12; the full probe (float32 features, scikit-learn keeps float32 coefficients) predict_proba
atol 1e-6 [2e-7]; float32 torch at the default tol 1e-4 against scikit-learn at 1e-4: 5e-3, as
tests/probe/test_probe_logistic.py allows for two approximate solutions.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import Compose
from scipy.special import log_softmax
from sklearn.datasets import make_classification, make_multilabel_classification
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier
from sklearn.preprocessing import StandardScaler
from sklearn.utils.class_weight import compute_class_weight

from medprobe.probe import (
    LogisticProbe,
    ProbeError,
    fit_logistic_lbfgs,
    logistic_objective,
    resolve_device,
    standardise_to_device,
)

TIGHT = {"tol": 1e-10, "max_iter": 10_000}
CASES = ["binary", "multiclass4", "multilabel3"]


def problem(case: str, n: int = 300, d: int = 30, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Well-conditioned synthetic rows: (n, d) float64 features, labels (n,) or (n, 3)."""
    if case == "multilabel3":
        X, Y = make_multilabel_classification(
            n_samples=n, n_features=d, n_classes=3, random_state=seed
        )
        return X.astype(np.float64), Y
    k = 2 if case == "binary" else 4
    X, y = make_classification(
        n_samples=n, n_features=d, n_informative=10, n_classes=k, random_state=seed,
        weights=[0.7, 0.3] if k == 2 else [0.4, 0.3, 0.2, 0.1],
    )  # fmt: skip
    return X, y


def sklearn_reference(case: str, X: np.ndarray, y: np.ndarray, C: float, cw: str | None):
    """(coef (K', D), intercept (K',)) of scikit-learn at tol 1e-10."""
    est = LogisticRegression(C=C, class_weight=cw, **TIGHT)
    if case == "multilabel3":
        m = OneVsRestClassifier(est).fit(X, y)
        return (
            np.vstack([e.coef_ for e in m.estimators_]),
            np.hstack([e.intercept_ for e in m.estimators_]),
        )
    est.fit(X, y)
    return est.coef_, est.intercept_


def torch_inputs(case: str, y: np.ndarray, cw: str | None):
    """(target tensor, sample weights or None, multinomial, n_classes) for the torch solver."""
    if case == "multilabel3":
        sw = None
        if cw:
            sw = np.stack(
                [compute_class_weight(cw, classes=np.array([0, 1]), y=c)[c] for c in y.T], 1
            )
        return torch.tensor(y, dtype=torch.float64), sw, False, None
    sw = compute_class_weight(cw, classes=np.unique(y), y=y)[y] if cw else None
    if case == "binary":
        return (
            torch.tensor(y[:, None], dtype=torch.float64),
            None if sw is None else sw[:, None],
            False,
            None,
        )
    return torch.tensor(y), sw, True, 4


def numpy_objective(case, X, y, coef, icpt, C, sw) -> float:
    """scikit-learn's documented objective, per problem (C * sum s_i loss_i + ||w||^2 / 2) /
    (C * sum s_i), written out independently in numpy."""
    z = X @ coef.T + icpt
    if case == "multiclass4":
        s = np.ones(len(y)) if sw is None else sw
        loss = -log_softmax(z, axis=1)[np.arange(len(y)), y]
        return float((C * (s * loss).sum() + 0.5 * (coef**2).sum()) / (C * s.sum()))
    Y = y[:, None] if case == "binary" else y
    S = np.ones(Y.shape) if sw is None else sw
    loss = np.logaddexp(0.0, z) - Y * z  # -log sigmoid(z) for Y=1, -log(1-sigmoid(z)) for 0
    per_problem = (C * (S * loss).sum(0) + 0.5 * (coef**2).sum(1)) / (C * S.sum(0))
    return float(per_problem.sum())


@pytest.mark.parametrize("cw", [None, "balanced"])
@pytest.mark.parametrize("case", CASES)
def test_solver_matches_sklearn_coefficients(case: str, cw: str | None) -> None:
    X, y = problem(case)
    X = StandardScaler().fit_transform(X)
    C = 0.5
    ref_coef, ref_icpt = sklearn_reference(case, X, y, C, cw)
    target, sw, multinomial, k = torch_inputs(case, y, cw)
    res = fit_logistic_lbfgs(
        torch.from_numpy(X), target, C, multinomial=multinomial, n_classes=k,
        sample_weight=sw, **TIGHT,
    )  # fmt: skip
    coef, icpt = res.coef.numpy(), res.intercept.numpy()
    assert coef.shape == ref_coef.shape == (1 if case == "binary" else 3 if k is None else 4, 30)
    np.testing.assert_allclose(coef, ref_coef, rtol=0, atol=2e-6)
    np.testing.assert_allclose(icpt, ref_icpt, rtol=0, atol=2e-6)
    assert res.converged and res.n_iter > 5
    # the objective is scikit-learn's: our value at the solution equals the numpy formula, and
    # our solution is at least as good as scikit-learn's
    ours = numpy_objective(case, X, y, coef, icpt, C, sw)
    theirs = numpy_objective(case, X, y, ref_coef, ref_icpt, C, sw)
    assert res.objective == pytest.approx(ours, abs=1e-12)
    assert ours <= theirs + 1e-12
    assert abs(ours - theirs) < 1e-10


def test_objective_formula_at_random_weights() -> None:
    """Objective values (not just minimisers) at arbitrary weights, weighted and not."""
    rng = np.random.default_rng(1)
    for case in CASES:
        X, y = problem(case, n=50, d=12)
        k = {"binary": 1, "multiclass4": 4, "multilabel3": 3}[case]
        coef, icpt = rng.normal(size=(k, 12)), rng.normal(size=k)
        for cw in (None, "balanced"):
            target, sw, multinomial, _ = torch_inputs(case, y, cw)
            f = logistic_objective(
                torch.from_numpy(X), target, torch.from_numpy(coef), torch.from_numpy(icpt),
                0.3, multinomial=multinomial,
                sample_weight=None if sw is None else torch.from_numpy(sw),
            )  # fmt: skip
            assert f.dtype == torch.float64
            assert float(f) == pytest.approx(
                numpy_objective(case, X, y, coef, icpt, 0.3, sw), rel=1e-12
            )


def test_binary_is_one_sigmoid_not_a_two_row_softmax() -> None:
    """A 2-class softmax with l2 on both rows is another problem: at the optimum W1 = -W0, so
    its penalty on W1 - W0 is halved, i.e. it equals sklearn's binary fit at 2C, not at C."""
    X, y = problem("binary")
    X = StandardScaler().fit_transform(X)
    one, _ = sklearn_reference("binary", X, y, 0.5, None)
    two_c, _ = sklearn_reference("binary", X, y, 1.0, None)
    soft = fit_logistic_lbfgs(
        torch.from_numpy(X), torch.tensor(y), 0.5, multinomial=True, n_classes=2, **TIGHT
    )
    w = (soft.coef[1] - soft.coef[0]).numpy()
    np.testing.assert_allclose(w, two_c[0], atol=2e-6)
    assert np.abs(w - one[0]).max() > 1e-2
    sig = fit_logistic_lbfgs(
        torch.from_numpy(X), torch.tensor(y[:, None], dtype=torch.float64), 0.5,
        multinomial=False, **TIGHT,
    )  # fmt: skip
    np.testing.assert_allclose(sig.coef.numpy(), one, atol=2e-6)


def split(case: str, offset: float = 50.0):
    X, y = problem(case, n=600, d=25, seed=3)
    X = (X * 3.0 + offset).astype(np.float32)  # standardisation has work to do
    return X[:300], y[:300], X[300:420], y[300:420], X[420:], y[420:]


@pytest.mark.parametrize("cw", [None, "balanced"])
@pytest.mark.parametrize("case", CASES)
def test_probe_torch_backend_equals_sklearn_backend(case: str, cw: str | None) -> None:
    X, y, Xv, yv, Xt, _ = split(case)
    k, ml = (3, True) if case == "multilabel3" else (2 if case == "binary" else 4, False)
    kw = dict(n_classes=k, multilabel=ml, C_grid=[1e-3, 1e-2, 1e-1, 1.0, 10.0], class_weight=cw)
    sk = LogisticProbe(backend="sklearn", **kw, **TIGHT).fit(X, y, Xv, yv)
    tp = LogisticProbe(backend="torch", device="cpu", dtype="float64", **kw, **TIGHT)
    tp.fit(X, y, Xv, yv)
    assert tp.C_ == sk.C_
    assert [s["C"] for s in tp.selection_] == [s["C"] for s in sk.selection_]
    # scikit-learn computes in float32 on the probe's float32 features and stops where the
    # float32 objective stops changing (gradient ~1e-5 even at tol 1e-10), so the two backends
    # agree to ~3e-4 [measured 2.8e-4] in probability and 1e-4 in validation AUROC ...
    np.testing.assert_allclose(
        [s["score"] for s in tp.selection_], [s["score"] for s in sk.selection_], atol=5e-4
    )
    assert tp.converged_ and sk.converged_
    np.testing.assert_allclose(tp.scaler_.mean_, sk.scaler_.mean_, rtol=1e-12)
    np.testing.assert_allclose(tp.scaler_.scale_, sk.scaler_.scale_, rtol=1e-12)
    p_t, p_s = tp.predict_proba(Xt), sk.predict_proba(Xt)
    assert p_t.dtype == np.float64 and p_t.shape == p_s.shape == (len(Xt), k)
    np.testing.assert_allclose(p_t, p_s, rtol=0, atol=1e-3)
    if not ml:
        np.testing.assert_allclose(p_t.sum(1), 1.0, atol=1e-12)
    # ... while scikit-learn on the same standardised rows in float64, at the chosen C, is the
    # torch probe's solution to 2e-6 [measured <= 8.3e-7 coefficients, 6.3e-7 probabilities]
    Xs, Xts = (tp.scaler_.transform(a).astype(np.float64) for a in (X, Xt))
    est = LogisticRegression(C=tp.C_, class_weight=cw, **TIGHT)
    ref = (OneVsRestClassifier(est) if ml else est).fit(Xs, y)
    ref_coef = np.vstack([e.coef_ for e in ref.estimators_]) if ml else ref.coef_
    assert tp.coef_.shape == ref_coef.shape and tp.coef_.dtype == np.float64
    np.testing.assert_allclose(tp.coef_, ref_coef, rtol=0, atol=2e-6)
    ref_p = ref.predict_proba(Xts)
    if not ml:
        ref_p = np.zeros((len(Xt), k))
        ref_p[:, ref.classes_] = ref.predict_proba(Xts)
    np.testing.assert_allclose(p_t, ref_p, rtol=0, atol=2e-6)


@pytest.mark.parametrize("case", ["multiclass4", "multilabel3"])
def test_probe_float32_torch_at_default_tol_agrees_with_sklearn(case: str) -> None:
    X, y, Xv, yv, Xt, _ = split(case)
    k, ml = (3, True) if case == "multilabel3" else (4, False)
    kw = dict(n_classes=k, multilabel=ml, C_grid=[1e-2, 1e-1, 1.0])
    sk = LogisticProbe(**kw).fit(X, y, Xv, yv)
    tp = LogisticProbe(backend="torch", device="cpu", dtype="float32", **kw).fit(X, y, Xv, yv)
    assert tp.C_ == sk.C_
    assert all(s["grad_max"] <= 1e-4 for s in tp.solver_)
    p_t, p_s = tp.predict_proba(Xt), sk.predict_proba(Xt)
    np.testing.assert_allclose(p_t, p_s, atol=5e-3)
    if not ml:
        np.testing.assert_array_equal(p_t.argmax(1), p_s.argmax(1))


def test_absent_class_binary_subset_and_constant_column_match_sklearn() -> None:
    X, y, Xv, yv, Xt, _ = split("multiclass4")
    for keep in ([0, 1, 3], [1, 3]):  # multinomial over 3 present classes; binary 1 vs 3
        m = np.isin(y, keep)
        kw = dict(n_classes=4, C_grid=[0.1, 1.0], **TIGHT)
        sk = LogisticProbe(**kw).fit(X[m], y[m], Xv, yv)
        tp = LogisticProbe(backend="torch", device="cpu", dtype="float64", **kw).fit(
            X[m], y[m], Xv, yv
        )
        p_t = tp.predict_proba(Xt)
        assert tp.coef_.shape == (1 if len(keep) == 2 else 3, 25)
        absent = [c for c in range(4) if c not in keep]
        assert np.all(p_t[:, absent] == 0.0)
        np.testing.assert_allclose(p_t, sk.predict_proba(Xt), atol=1e-3)
    X, Y, Xv, Yv, Xt, _ = split("multilabel3")
    Y = Y.copy()
    Y[:, 1] = 1  # present in every training row: a constant predictor, as OneVsRest
    kw = dict(n_classes=3, multilabel=True, C_grid=[0.1, 1.0], **TIGHT)
    sk = LogisticProbe(**kw).fit(X, Y, Xv, Yv)
    tp = LogisticProbe(backend="torch", device="cpu", dtype="float64", **kw).fit(X, Y, Xv, Yv)
    p_t = tp.predict_proba(Xt)
    assert np.all(p_t[:, 1] == 1.0) and np.all(sk.predict_proba(Xt)[:, 1] == 1.0)
    assert tp.coef_.shape == (2, 25)
    np.testing.assert_allclose(p_t, sk.predict_proba(Xt), atol=1e-3)


def test_non_convergence_is_reported() -> None:
    X, y, Xv, yv, _, _ = split("multiclass4")
    kw = dict(n_classes=4, C_grid=[1.0, 100.0], backend="torch", device="cpu")
    capped = LogisticProbe(max_iter=2, **kw).fit(X, y, Xv, yv)
    assert not capped.converged_
    assert [s["n_iter"] for s in capped.solver_] == [2, 2] and capped.n_iter_max_ == 2
    assert capped.solver_[0]["grad_max"] > 1e-4
    ok = LogisticProbe(**kw).fit(X, y, Xv, yv)
    assert ok.converged_ and all(s["grad_max"] <= 1e-4 for s in ok.solver_)
    # every C is fitted cold (issue 13): the second C of the path is the fit at that C alone
    cold = LogisticProbe(**{**kw, "C_grid": [100.0]}).fit(X, y, Xv, yv)
    assert ok.solver_[1] == cold.solver_[0]


def test_standardise_to_device_is_standard_scaler_on_float32() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(203, 17)) * rng.uniform(0.1, 30, 17) + rng.normal(size=17) * 100
    X[:, 4] = 7.25  # constant feature: scale 1, as scikit-learn
    ref = StandardScaler().fit(X.astype(np.float32))
    want = ref.transform(X.astype(np.float32))
    for src in (X, X.astype(np.float32), X.astype(np.float16)):
        ref_src = StandardScaler().fit(src.astype(np.float32))
        want_src = ref_src.transform(src.astype(np.float32))
        for dtype, rows in ((torch.float32, 64), (torch.float64, 5), (torch.float32, None)):
            t, sc = standardise_to_device(src, torch.device("cpu"), dtype, chunk_rows=rows)
            assert t.dtype == dtype and t.shape == src.shape
            np.testing.assert_allclose(sc.mean_, ref_src.mean_, rtol=1e-13)
            np.testing.assert_allclose(sc.var_, ref_src.var_, rtol=1e-12)
            assert sc.scale_[4] == 1.0 and sc.mean_.dtype == np.float64
            got = t.numpy().astype(np.float32)
            # float32 values equal to scikit-learn's up to one unit in the last place
            assert np.max(np.abs(got - want_src) / np.spacing(np.abs(want_src) + 1e-30)) <= 1
            np.testing.assert_array_equal(sc.transform(src.astype(np.float32)), want_src)
    # validation rows use the training statistics
    t, _ = standardise_to_device(X[:10] + 5.0, torch.device("cpu"), torch.float32, scaler=ref)
    np.testing.assert_array_equal(t.numpy(), ref.transform((X[:10] + 5.0).astype(np.float32)))
    assert want.dtype == np.float32


def test_bad_backend_device_dtype_are_one_line_errors() -> None:
    for key, value in (("backend", "jax"), ("device", "gpu"), ("dtype", "float16")):
        with pytest.raises(ValueError, match=f"probe.{key} '{value}' unknown") as e:
            LogisticProbe(n_classes=2, **{key: value})
        assert "\n" not in str(e.value)
    if not torch.cuda.is_available():
        with pytest.raises(ProbeError, match="probe.device=cuda but no CUDA device"):
            resolve_device("cuda")
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_config_keys_default_to_sklearn_and_are_validated(compose: Compose) -> None:
    from hydra.errors import ConfigCompositionException

    from medprobe.config import ConfigError, validate
    from medprobe.probe import from_config

    cfg = compose()
    assert (cfg.probe.backend, cfg.probe.device, cfg.probe.dtype) == ("sklearn", "auto", "float32")
    validate(cfg)
    probe = from_config(cfg.probe, n_classes=3, multilabel=False, seed=0)
    assert (probe.backend, probe.device, probe.dtype) == ("sklearn", "auto", "float32")
    cfg = compose("probe.backend=torch", "probe.device=cpu", "probe.dtype=float64")
    validate(cfg)
    probe = from_config(cfg.probe, n_classes=3, multilabel=False, seed=0)
    assert (probe.backend, probe.device, probe.dtype) == ("torch", "cpu", "float64")
    with pytest.raises(ConfigError) as e:  # an open set (cuda:N): checked after compose
        validate(compose("probe.device=gpu"))
    assert str(e.value) == "probe.device must be auto, cpu, cuda or cuda:N, got 'gpu'"
    closed = {"probe.backend=jax": "[sklearn, torch]", "probe.dtype=float16": "[float32, float64]"}
    for override, valid in closed.items():  # closed sets: refused at compose time
        with pytest.raises(ConfigCompositionException) as c:
            compose(override)
        assert f"Invalid value '{override.split('=')[1]}', expected one of {valid}" in str(
            c.value.__cause__
        )
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError) as e:
            validate(compose("probe.backend=torch", "probe.device=cuda:1"))
        assert str(e.value) == "probe.device=cuda:1 but no CUDA device is available here"
        validate(compose("probe.device=cuda"))  # unused by the sklearn backend


@pytest.mark.gpu
def test_gpu_float32_matches_sklearn_and_frees_memory() -> None:
    X, y, Xv, yv, Xt, _ = split("multiclass4")
    kw = dict(n_classes=4, C_grid=[1e-2, 1e-1, 1.0])
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    tp = LogisticProbe(backend="torch", device="cuda", **kw).fit(X, y, Xv, yv)
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() == before  # nothing left on the device
    sk = LogisticProbe(**kw).fit(X, y, Xv, yv)
    assert tp.C_ == sk.C_ and tp.converged_
    np.testing.assert_allclose(tp.predict_proba(Xt), sk.predict_proba(Xt), atol=5e-3)
    f64 = LogisticProbe(backend="torch", device="cuda", dtype="float64", **kw, **TIGHT)
    cpu = LogisticProbe(backend="torch", device="cpu", dtype="float64", **kw, **TIGHT)
    np.testing.assert_allclose(
        f64.fit(X, y, Xv, yv).predict_proba(Xt), cpu.fit(X, y, Xv, yv).predict_proba(Xt), atol=1e-6
    )
