"""The numbers the paper reports, with where each one is written, for side-by-side reports.

Han et al., "Multimodal Large Language Models are Generalist Medical Image Interpreters",
medRxiv 2023.12.21.23300146. The full text could not be read here (no network; the stored
copies give the v2 and v4 abstracts, which carry no numbers). Every value below is from the
abstract's *Results* paragraph of the preprint as the authors quote it in their public
repository's README (``peterhan91/Multimodal-Probes``, README.md at commit ``0203182``, section
"Abstract", item 3 "Results"); :attr:`Reported.quote` holds the words each value is read from.

What is here and what is not:

- Flamingo-80B (medprobe model ``idefics80b``, IDEFICS-80B-instruct: the checkpoint the
  authors' ``activation.py`` loads) for all eight tasks (T1-T2 macro F1, T3-T8 AUROC).
- CLIP (``clip``, ViT-B/32 as the authors' ``clip_ex.py`` loads it) for T1 and T2: the
  sentence names it ("outperforming CLIP representations ... in CRC (F1 score: 0.892 vs 0.764)
  and pan-cancer cohorts (0.870 vs 0.797)").
- PLIP (``plip``, "a domain-specific foundation model, which was pre-trained on Twitter") for
  T1 only.
- The second value of T3-T8 ("vs 0.892", ...) compares with "the baseline models" / "all
  models" without naming one: kept with ``model=None`` (listed in the report's table of paper
  numbers, never placed beside a model's bar).
- **Not found** (left out, not guessed): Flamingo-9B's values, the per-finding AUROCs of
  Fig. 5, any layer-sweep value of Fig. S5 and any training-fraction value (the "retained at
  10%" share) of Fig. 6, the CIs of every value.

The ``figure`` of an entry is the medprobe experiment whose panel shows the task
(``conf/experiment/fig3.yaml``: T1-T4, ``fig4.yaml``: T5-T8); the paper's values are with all
training data at the authors' default layer, so the report also draws them as reference lines
on the Fig. 6 (training fraction 1) and Fig. S5 (layer) panels.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["REPORTED", "SOURCE", "Reported", "paper_values", "is_paper_run"]

#: Where every value of :data:`REPORTED` is written.
SOURCE = (
    "Han et al., medRxiv 2023.12.21.23300146, Abstract (Results), as quoted in "
    "github.com/peterhan91/Multimodal-Probes README.md (commit 0203182)"
)


@dataclass(frozen=True)
class Reported:
    """One number the paper reports.

    Attributes:
        figure: the medprobe experiment / paper figure whose panel shows it (``"Fig. 3"``).
        task: medprobe task identity (``t1`` .. ``t8``, docs/tasks.md).
        model: medprobe model identity (``idefics80b``, ``clip``, ``plip``), or None when the
            paper does not name the model the value belongs to.
        metric: results.json metric key the value corresponds to (``f1_macro`` for the
            paper's "F1 score" of T1-T2, ``auroc_macro`` for its "AUC" of T3-T8).
        value: the number as printed (3 decimals).
        source: where it is printed (:data:`SOURCE`).
        quote: the words it is read from.
    """

    figure: str
    task: str
    model: str | None
    metric: str
    value: float
    source: str
    quote: str


_Q_T12 = (
    "The Flamingo-80B model proved superior in identifying tissue types, outperforming CLIP "
    "representations and other models in CRC (F1 score: 0.892 vs 0.764) and pan-cancer "
    "cohorts (0.870 vs 0.797, P<.001)."
)
_Q_PLIP = (
    "Flamingo-80B also outperformed a domain-specific foundation model, which was pre-trained "
    "on Twitter, with an F1 score of 0.892 vs 0.877."
)
_Q_T34 = (
    "In the study of pigmented skin lesions (T3) ... and melanoma (T4) ..., Flamingo-80B also "
    "demonstrated higher accuracy, as shown by its AUC scores (average over skin lesions: 0.945 "
    "vs 0.892; melanoma: 0.885 vs 0.834, P<.001)."
)
_Q_T56 = (
    "In ophthalmology tasks (T4 & T5) [sic: T5 and T6] involving over 44,350 patients for "
    "diabetic retinopathy (DR) and 57,770 for glaucoma, it significantly surpassed the baseline "
    "models (DR: 0.803 vs 0.725; glaucoma: 0.868 vs 0.716, P<.001)."
)
_Q_T78 = (
    "For chest radiographic conditions (T7) ... and osteoarthritis (OA, T8) ..., Flamingo-80B "
    "consistently achieved the highest AUC among all models: Radiographic conditions: 0.781 vs "
    "0.560 and OA: 0.810 vs 0.714, respectively."
)


def _r(
    figure: str, task: str, model: str | None, metric: str, value: float, quote: str
) -> Reported:
    return Reported(figure, task, model, metric, value, SOURCE, quote)


#: Every number found (see the module docstring for what is not here), in task order.
REPORTED: tuple[Reported, ...] = (
    _r("Fig. 3", "t1", "idefics80b", "f1_macro", 0.892, _Q_T12),
    _r("Fig. 3", "t1", "clip", "f1_macro", 0.764, _Q_T12),
    _r("Fig. 3", "t1", "plip", "f1_macro", 0.877, _Q_PLIP),
    _r("Fig. 3", "t2", "idefics80b", "f1_macro", 0.870, _Q_T12),
    _r("Fig. 3", "t2", "clip", "f1_macro", 0.797, _Q_T12),
    _r("Fig. 3", "t3", "idefics80b", "auroc_macro", 0.945, _Q_T34),
    _r("Fig. 3", "t3", None, "auroc_macro", 0.892, _Q_T34),
    _r("Fig. 3", "t4", "idefics80b", "auroc_macro", 0.885, _Q_T34),
    _r("Fig. 3", "t4", None, "auroc_macro", 0.834, _Q_T34),
    _r("Fig. 4", "t5", "idefics80b", "auroc_macro", 0.803, _Q_T56),
    _r("Fig. 4", "t5", None, "auroc_macro", 0.725, _Q_T56),
    _r("Fig. 4", "t6", "idefics80b", "auroc_macro", 0.868, _Q_T56),
    _r("Fig. 4", "t6", None, "auroc_macro", 0.716, _Q_T56),
    _r("Fig. 4", "t7", "idefics80b", "auroc_macro", 0.781, _Q_T78),
    _r("Fig. 4", "t7", None, "auroc_macro", 0.560, _Q_T78),
    _r("Fig. 4", "t8", "idefics80b", "auroc_macro", 0.810, _Q_T78),
    _r("Fig. 4", "t8", None, "auroc_macro", 0.714, _Q_T78),
)

#: Overrides that make a run a reproduction of the paper (set on the command line; recorded in
#: results.json ``overrides``): the paper numerics, or one of the paper's experiments.
PAPER_OVERRIDES = ("fidelity=paper",)
PAPER_EXPERIMENTS = ("fig3", "fig4", "fig5", "fig6", "figS5")


def is_paper_run(overrides: Iterable[str]) -> bool:
    """Whether a run's command-line ``overrides`` (results.json ``overrides``) make it a paper
    reproduction: ``fidelity=paper`` or ``experiment=fig3|fig4|fig5|fig6|figS5`` (which set
    ``fidelity=paper``; conf/experiment/)."""
    for o in overrides:
        o = o.lstrip("+~")
        if o in PAPER_OVERRIDES:
            return True
        key, _, value = o.partition("=")
        if key == "experiment" and value in PAPER_EXPERIMENTS:
            return True
    return False


def paper_values(task: str, metric: str) -> dict[str, Reported]:
    """The paper's values for ``task`` and ``metric`` by model identity (named models only).

    Returns:
        ``{model: Reported}``; empty when the paper reports nothing named for the pair.
    """
    return {r.model: r for r in REPORTED if r.task == task and r.metric == metric and r.model}
