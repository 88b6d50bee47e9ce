"""Adjusted p-values for a family of tests: Holm (default) and Benjamini-Hochberg.

``compare`` and ``report`` test many hypotheses at once (every class, every model pair); a
reader judging "significant" marks needs p-values adjusted for the family. Each function takes
the family's raw p-values and returns adjusted ones in the same order; a hypothesis is
rejected at level ``alpha`` when its adjusted p-value is ``<= alpha``.

- Holm (1979, Scand. J. Statist. 6:65): step-down, controls the family-wise error rate under
  any dependence between the tests (paired comparisons on one test set are dependent).
  Sorted ``p_(1) <= ... <= p_(m)``: ``adj_(i) = max_{j <= i} min(1, (m - j + 1) p_(j))``.
- Benjamini & Hochberg (1995, JRSS B 57:289): step-up, controls the false discovery rate
  for independent or positively dependent tests.
  ``adj_(i) = min_{j >= i} min(1, m p_(j) / j)``; equals
  ``scipy.stats.false_discovery_control(p, method="bh")``.

Missing tests (``None`` or nan: e.g. no DeLong p-value for a class with one positive) are
not part of the family: they stay nan and do not count in ``m``. State the family with the
result (e.g. "Holm over 9 per-class DeLong tests of one model pair").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Literal

import numpy as np

__all__ = ["PVALUE_ADJUSTMENTS", "PValueAdjustment", "adjust_pvalues", "bh", "holm"]

#: Accepted ``method`` names of :func:`adjust_pvalues`; the first is the default.
PVALUE_ADJUSTMENTS: Final = ("holm", "bh")
PValueAdjustment = Literal["holm", "bh"]


def _family(p: Sequence[float | None] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(p as float64 with nan for None, mask of the family members)``."""
    arr = np.array([np.nan if v is None else v for v in np.asarray(p, dtype=object).ravel()])
    arr = arr.astype(np.float64)
    ok = ~np.isnan(arr)
    if ((arr[ok] < 0.0) | (arr[ok] > 1.0)).any():
        raise ValueError("p-values must lie in [0, 1]")
    return arr, ok


def holm(p: Sequence[float | None] | np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error rate).

    Args:
        p: raw p-values in [0, 1]; ``None`` / nan entries are left out of the family.

    Returns:
        ``(len(p),)`` float64 adjusted p-values in the input order (nan where the input was
        missing); each ``>=`` its raw p-value.

    Raises:
        ValueError: a p-value outside [0, 1].
    """
    arr, ok = _family(p)
    out = np.full(arr.shape, np.nan)
    q = arr[ok]
    m = q.size
    if m == 0:
        return out
    order = np.argsort(q, kind="stable")
    scaled = np.minimum(1.0, (m - np.arange(m)) * q[order])
    adj = np.empty(m)
    adj[order] = np.maximum.accumulate(scaled)
    out[ok] = adj
    return out


def bh(p: Sequence[float | None] | np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg step-up adjusted p-values (false discovery rate).

    Args:
        p: raw p-values in [0, 1]; ``None`` / nan entries are left out of the family.

    Returns:
        ``(len(p),)`` float64 adjusted p-values in the input order (nan where missing).

    Raises:
        ValueError: a p-value outside [0, 1].
    """
    arr, ok = _family(p)
    out = np.full(arr.shape, np.nan)
    q = arr[ok]
    m = q.size
    if m == 0:
        return out
    order = np.argsort(q, kind="stable")
    scaled = q[order] * m / np.arange(1, m + 1)
    adj = np.empty(m)
    adj[order] = np.minimum(1.0, np.minimum.accumulate(scaled[::-1])[::-1])
    out[ok] = adj
    return out


def adjust_pvalues(p: Sequence[float | None] | np.ndarray, method: str = "holm") -> np.ndarray:
    """Adjusted p-values of one family by ``method`` (``"holm"``, default, or ``"bh"``).

    Raises:
        ValueError: unknown method, or a p-value outside [0, 1].
    """
    if method == "holm":
        return holm(p)
    if method == "bh":
        return bh(p)
    raise ValueError(f"method must be one of {PVALUE_ADJUSTMENTS}; got {method!r}")
