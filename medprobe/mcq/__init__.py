"""Few-shot multiple-choice answering with IDEFICS (the paper's NEJM Image Challenge protocol).

Han et al. (medRxiv 2023) report that IDEFICS-80B answered 40.4 % of 929 NEJM Image Challenge
cases with its first answer and 54.3 % within three sampled answers. This module runs that
evaluation on any case file a user brings (NEJM content is not redistributable; the format is
documented in ``docs/mcq.md``), and on the case file ``experiments/build_mcq_cases.py`` builds
from the real labelled images in ``../shared/data``.

Protocol:

* Cases (:func:`read_cases`): JSONL, one case per line, five options, a 0-based answer index.
  Sorted by ``(date, id)``: the two earliest are the exemplars of a two-shot prompt, the rest
  are test cases.
* Prompt (:func:`render_prompt`): the IDEFICS instruct chat format, one ``User:`` turn per case
  (images first, then vignette, question and numbered choices), the exemplars answered by the
  ``Assistant:`` turn ``"<k>. <option>"`` (+ ``" Reason: ..."``); the test case ends at
  ``Assistant:``. Saved per case in ``mcq_prompts.jsonl``.
* Scoring (:func:`score_case`): ``greedy`` (one greedy answer, matched to the options by
  :func:`parse_answer`; unmatched or ambiguous = unparsed, never guessed), ``sample``
  (temperature 1.0, top-k 50, three samples; correct if any parses to the answer: the paper's
  top-3), ``loglik`` (sum of the log-probabilities of each option written as the exemplars
  write it, ``"<k>. <option><end_of_utterance>"``; the argmax is the answer; deterministic, no
  parsing). Generation bans the image tokens, decodes only new tokens and stops at
  ``<end_of_utterance>``.
* Metrics (:func:`summarize`): accuracy with a percentile bootstrap CI, accuracy by difficulty
  (readers' share correct in five equal-width bins) against chance, unparsed rate.
* Output (:func:`evaluate`): ``mcq_results.jsonl`` (one line per mode and case, appended and
  flushed: a killed run resumes where it stopped), ``mcq_summary.json``,
  ``mcq_by_difficulty.png``, ``mcq_report.md``, ``mcq_run.json`` (what the results belong to).

Modules: :mod:`~medprobe.mcq.protocol` (constants), :mod:`~medprobe.mcq.cases`,
:mod:`~medprobe.mcq.prompt`, :mod:`~medprobe.mcq.parse`, :mod:`~medprobe.mcq.scorer` (the model,
processor and image preprocessing of :class:`medprobe.extractors.idefics.IdeficsExtractor`),
:mod:`~medprobe.mcq.summary`, :mod:`~medprobe.mcq.evaluate` (the resumable run, W&B) and
:mod:`~medprobe.mcq.cli` (``medprobe mcq``).
"""

from __future__ import annotations

from medprobe.errors import McqError
from medprobe.mcq.cases import OPTIONAL, REQUIRED, Case, read_cases, split_exemplars
from medprobe.mcq.cli import build_parser, main
from medprobe.mcq.evaluate import WandbLog, evaluate, log_wandb, read_results, wandb_log
from medprobe.mcq.parse import LETTERS, normalise, parse_answer
from medprobe.mcq.prompt import INSTRUCTION, answer_text, prompt_images, render_prompt, user_turn
from medprobe.mcq.protocol import (
    DIFFICULTY_EDGES,
    LOGLIK_NORMS,
    MCQ_VERSION,
    MODES,
    N_EXEMPLARS,
    N_OPTIONS,
    SAMPLING,
    check_loglik_norm,
    check_modes,
)
from medprobe.mcq.scorer import Scorer, loglik_choice, score_case
from medprobe.mcq.summary import (
    chance_level,
    difficulty_bin,
    plot_by_difficulty,
    report_markdown,
    summarize,
)

__all__ = [
    "Case",
    "DIFFICULTY_EDGES",
    "INSTRUCTION",
    "LETTERS",
    "LOGLIK_NORMS",
    "MCQ_VERSION",
    "MODES",
    "McqError",
    "N_EXEMPLARS",
    "N_OPTIONS",
    "OPTIONAL",
    "REQUIRED",
    "SAMPLING",
    "Scorer",
    "WandbLog",
    "answer_text",
    "build_parser",
    "chance_level",
    "check_loglik_norm",
    "check_modes",
    "difficulty_bin",
    "evaluate",
    "log_wandb",
    "loglik_choice",
    "main",
    "normalise",
    "parse_answer",
    "plot_by_difficulty",
    "prompt_images",
    "read_cases",
    "read_results",
    "render_prompt",
    "report_markdown",
    "score_case",
    "split_exemplars",
    "summarize",
    "user_turn",
    "wandb_log",
]
