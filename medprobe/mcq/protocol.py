"""The evaluation protocol's constants (Han et al., medRxiv 2023; NEJM Image Challenge).

Five options per case, two exemplars (a two-shot prompt), three answer modes; sampling as
the paper's top-3 protocol; difficulty as five equal-width bins of the readers' share correct.
"""

from __future__ import annotations

from collections.abc import Sequence

from medprobe.errors import McqError

#: Bumped whenever a change here changes prompts or scores (part of ``mcq_run.json``).
MCQ_VERSION = "mcq-2"
#: ``greedy`` (one answer), ``sample`` (three sampled answers, correct if any is), ``loglik``
#: (the option of highest log-likelihood).
MODES = ("greedy", "sample", "loglik")
N_OPTIONS = 5
N_EXEMPLARS = 2
#: How ``loglik`` compares options: ``sum`` (summed log-probability of the option's tokens; the
#: default) or ``mean`` (per-token mean, length-normalised). Both are always computed and
#: reported; this picks the one that decides ``pred``/``correct``.
LOGLIK_NORMS = ("sum", "mean")
#: The paper's sampling protocol: temperature 1.0, top-k 50, three answers per case.
SAMPLING = {"temperature": 1.0, "top_k": 50, "top_p": 1.0, "num_samples": 3}
#: Five equal-width bins of the readers' share correct (the hardest first).
DIFFICULTY_EDGES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


def check_loglik_norm(norm: str) -> str:
    """``norm`` -> itself.

    Raises:
        McqError: not one of :data:`LOGLIK_NORMS`.
    """
    if norm not in LOGLIK_NORMS:
        raise McqError(f"unknown loglik norm {norm!r}; valid: {list(LOGLIK_NORMS)}")
    return norm


def check_modes(modes: Sequence[str]) -> list[str]:
    """Modes -> the distinct modes in order.

    Raises:
        McqError: a mode that is not one of :data:`MODES`.
    """
    out = list(dict.fromkeys(modes))
    for m in out:
        if m not in MODES:
            raise McqError(f"unknown mode {m!r}; valid: {list(MODES)} or 'all'")
    return out
