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

The model, processor and image preprocessing are those of
:class:`medprobe.extractors.idefics.IdeficsExtractor` (its ``load``, ``processor`` and
``preprocess``); this module adds only multi-image prompt encoding and the scorers.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medprobe.errors import McqError  # noqa: F401 (re-exported)
from medprobe.extractors.idefics import END_OF_UTTERANCE, FAKE_TOKEN, IMAGE_TOKEN
from medprobe.stats import bootstrap_counts, bootstrap_seed

if TYPE_CHECKING:
    import torch

    from medprobe.extractors.idefics import IdeficsExtractor

log = logging.getLogger(__name__)

#: Bumped whenever a change here changes prompts or scores (part of ``mcq_run.json``).
MCQ_VERSION = "mcq-1"
MODES = ("greedy", "sample", "loglik")
N_OPTIONS = 5
N_EXEMPLARS = 2
LETTERS = "ABCDE"
#: The paper's sampling protocol: temperature 1.0, top-k 50, three answers per case.
SAMPLING = {"temperature": 1.0, "top_k": 50, "top_p": 1.0, "num_samples": 3}
#: Five equal-width bins of the readers' share correct (the hardest first).
DIFFICULTY_EDGES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
INSTRUCTION = "Answer with the number of the correct choice."
REQUIRED = ("id", "date", "images", "question", "options", "answer")
OPTIONAL = ("vignette", "readers_correct", "reason")


# ------------------------------------------------------------------------------------ cases


@dataclass(frozen=True)
class Case:
    """One multiple-choice case.

    Attributes:
        id: unique case id (string).
        date: ISO date ``YYYY-MM-DD``; the two earliest cases are the exemplars.
        images: image paths, absolute (relative paths in the file are resolved against the
            case file's folder by :func:`read_cases`); at least one.
        question: the question text.
        options: exactly five answer texts, distinct.
        answer: 0-based index of the correct option (0..4).
        vignette: case description shown before the question ("" if none).
        readers_correct: share of readers who answered correctly, in [0, 1], or ``None``.
        reason: optional explanation, shown after the answer when the case is an exemplar.
    """

    id: str
    date: str
    images: tuple[str, ...]
    question: str
    options: tuple[str, ...]
    answer: int
    vignette: str = ""
    readers_correct: float | None = None
    reason: str = ""


def _case_from_obj(obj: Any, where: str, base: Path) -> Case:
    if not isinstance(obj, dict):
        raise McqError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    missing = [k for k in REQUIRED if k not in obj]
    if missing:
        raise McqError(f"{where}: missing field(s) {missing}; required: {list(REQUIRED)}")
    unknown = sorted(set(obj) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        raise McqError(f"{where}: unknown field(s) {unknown}; allowed: {[*REQUIRED, *OPTIONAL]}")
    cid = obj["id"]
    if not isinstance(cid, str | int) or isinstance(cid, bool) or not str(cid).strip():
        raise McqError(f"{where}: 'id' must be a non-empty string, got {cid!r}")
    date = obj["date"]
    if not isinstance(date, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", date):
        raise McqError(f"{where}: 'date' must be an ISO date YYYY-MM-DD, got {date!r}")
    images = obj["images"]
    if isinstance(images, str):
        images = [images]
    if not isinstance(images, list) or not images or not all(isinstance(p, str) for p in images):
        raise McqError(f"{where}: 'images' must be a path or a non-empty list of paths")
    paths = []
    for p in images:
        path = Path(p).expanduser()
        path = path if path.is_absolute() else base / path
        if not path.is_file():
            raise McqError(f"{where}: image not found: {path}")
        paths.append(str(path.resolve()))
    for key in ("question", "vignette", "reason"):
        if key in obj and not isinstance(obj[key], str):
            raise McqError(f"{where}: {key!r} must be a string, got {obj[key]!r}")
    if not obj["question"].strip():
        raise McqError(f"{where}: 'question' is empty")
    options = obj["options"]
    if (
        not isinstance(options, list)
        or len(options) != N_OPTIONS
        or not all(isinstance(o, str) and o.strip() for o in options)
    ):
        raise McqError(f"{where}: 'options' must be a list of {N_OPTIONS} non-empty strings")
    if len({_norm(o) for o in options}) != N_OPTIONS:
        raise McqError(f"{where}: 'options' must be distinct, got {options}")
    answer = obj["answer"]
    if not isinstance(answer, int) or isinstance(answer, bool) or not 0 <= answer < N_OPTIONS:
        raise McqError(
            f"{where}: 'answer' must be the 0-based index of the correct option (0..4), "
            f"got {answer!r}"
        )
    rc = obj.get("readers_correct")
    if rc is not None and (
        isinstance(rc, bool) or not isinstance(rc, int | float) or not 0.0 <= rc <= 1.0
    ):
        raise McqError(f"{where}: 'readers_correct' must be a share in [0, 1] or null, got {rc!r}")
    return Case(
        id=str(cid),
        date=date,
        images=tuple(paths),
        question=obj["question"].strip(),
        options=tuple(o.strip() for o in options),
        answer=int(answer),
        vignette=str(obj.get("vignette") or "").strip(),
        readers_correct=None if rc is None else float(rc),
        reason=str(obj.get("reason") or "").strip(),
    )


def read_cases(path: str | Path) -> list[Case]:
    """Read and validate a JSONL case file -> cases sorted by ``(date, id)``.

    Blank lines are skipped. Relative image paths are resolved against the file's folder.

    Raises:
        McqError: missing file; a line that is not JSON or not a valid case (the message names
            ``<file>:<line>`` and the field); duplicate ids; fewer than three cases (two
            exemplars + one test case).
    """
    path = Path(path)
    if not path.is_file():
        raise McqError(f"case file not found: {path}")
    cases: list[Case] = []
    seen: dict[str, int] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise McqError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
            case = _case_from_obj(obj, where, path.parent)
            if case.id in seen:
                raise McqError(f"{where}: duplicate id {case.id!r} (first on line {seen[case.id]})")
            seen[case.id] = lineno
            cases.append(case)
    if len(cases) < N_EXEMPLARS + 1:
        raise McqError(
            f"{path}: {len(cases)} case(s); need at least {N_EXEMPLARS + 1} "
            f"({N_EXEMPLARS} exemplars + test cases)"
        )
    return sorted(cases, key=lambda c: (c.date, c.id))


def split_exemplars(cases: Sequence[Case]) -> tuple[list[Case], list[Case]]:
    """Cases -> ``(the two earliest by (date, id), the rest in date order)``."""
    ordered = sorted(cases, key=lambda c: (c.date, c.id))
    return ordered[:N_EXEMPLARS], ordered[N_EXEMPLARS:]


# ----------------------------------------------------------------------------------- prompt


def _images_text(n: int) -> str:
    """``n`` images as the IDEFICS processor writes adjacent images (shared fake tokens)."""
    return FAKE_TOKEN + f"{IMAGE_TOKEN}{FAKE_TOKEN}" * n


def user_turn(case: Case) -> str:
    """One case's ``User:`` turn: images, vignette, question, numbered choices, instruction."""
    lines = [case.vignette] if case.vignette else []
    lines.append(case.question)
    lines += [f"{k}. {o}" for k, o in enumerate(case.options, start=1)]
    lines.append(INSTRUCTION)
    return "User:" + _images_text(len(case.images)) + "\n".join(lines) + END_OF_UTTERANCE + "\n"


def answer_text(case: Case, index: int) -> str:
    """The answer as the exemplars write it: ``"<k>. <option>"`` (k = index + 1)."""
    return f"{index + 1}. {case.options[index]}"


def render_prompt(exemplars: Sequence[Case], case: Case, bos_token: str = "<s>") -> str:
    """The exact text the model reads for ``case`` after ``exemplars`` (pure string).

    ``<s>`` + per exemplar its user turn and ``"Assistant: <k>. <option>[ Reason: ...]"``
    closed by ``<end_of_utterance>``, then the test case's user turn and ``"Assistant:"``.
    Each image is an ``<image>`` token between ``<fake_token_around_image>`` tokens (adjacent
    images share them, as in ``IdeficsProcessor``); images appear in exemplar order, then the
    test case's.
    """
    parts = [bos_token]
    for ex in exemplars:
        reason = f" Reason: {ex.reason}" if ex.reason else ""
        parts.append(user_turn(ex))
        parts.append(f"Assistant: {answer_text(ex, ex.answer)}{reason}{END_OF_UTTERANCE}\n")
    parts.append(user_turn(case))
    parts.append("Assistant:")
    return "".join(parts)


def prompt_images(exemplars: Sequence[Case], case: Case) -> list[str]:
    """Image paths in the order of their ``<image>`` tokens in :func:`render_prompt`."""
    return [p for c in [*exemplars, case] for p in c.images]


# ---------------------------------------------------------------------------------- parsing


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^\w]+", " ", text.lower()).split())


def parse_answer(text: str, options: Sequence[str]) -> int | None:
    """A generated answer -> 0-based option index, or ``None`` (unparsed).

    Three readings, each giving at most one index:

    * a leading option number ``1``-``5`` (``"3"``, ``"3."``, ``"(3)"``, ``"Answer: 3"``),
    * a leading capital letter ``A``-``E`` followed by ``.``, ``)``, ``:`` or the end
      (``"C."``, ``"(C)"``; ``"A lipoma"`` is not a letter),
    * option texts found in the answer as whole words, case- and punctuation-insensitive; an
      option whose text lies inside another found option's text is dropped (``"grade 1"``
      inside ``"grade 1 or 2"``).

    The answer is the one index all readings agree on; no reading, two readings that
    disagree, or several option texts (``"lipoma or liposarcoma"``) -> ``None``.
    """
    if not isinstance(text, str):
        return None
    t = text.strip()
    n = len(options)
    found: set[int] = set()
    m = re.match(r"^(?:answer\s*[:\-]?\s*)?\(?([1-9])\)?(?=[\s.):,]|$)", t, flags=re.I)
    if m and 1 <= int(m.group(1)) <= n:
        found.add(int(m.group(1)) - 1)
    elif m:
        return None  # an option number that does not exist
    m = re.match(r"^(?:answer\s*[:\-]?\s*)?\(?([A-E])(?:[.):]|\)?$)", t)
    if m and LETTERS.index(m.group(1)) < n:
        found.add(LETTERS.index(m.group(1)))
    body = f" {_norm(t)} "
    hits = [i for i, o in enumerate(options) if _norm(o) and f" {_norm(o)} " in body]
    hits = [
        i for i in hits if not any(j != i and _norm(options[i]) in _norm(options[j]) for j in hits)
    ]
    if len(hits) > 1:
        return None
    found.update(hits)
    return found.pop() if len(found) == 1 else None


# ---------------------------------------------------------------------------------- scoring


@dataclass
class Scorer:
    """IDEFICS generation and option scoring on top of an ``IdeficsExtractor``.

    Args:
        extractor: provides ``load()`` (the full model: generation needs every block),
            ``processor()`` (tokenizer, image processor) and ``preprocess``.
        max_new_tokens: generation budget per answer.
        seed: base seed; sampling for case ``id`` uses ``bootstrap_seed("mcq-sample", id,
            seed)``, so a resumed run samples exactly as an uninterrupted one.
    """

    extractor: IdeficsExtractor
    max_new_tokens: int = 32
    seed: int = 0
    _ids: dict[str, int] = field(default_factory=dict)

    def model(self) -> Any:
        return self.extractor.load("all")

    def _token(self, token: str) -> int:
        if token not in self._ids:
            tok = self.extractor.processor().tokenizer
            tid = tok.convert_tokens_to_ids(token)
            if tid is None or tid == tok.unk_token_id:
                raise McqError(f"the tokenizer of {self.extractor.hf_id!r} has no {token}")
            self._ids[token] = int(tid)
        return self._ids[token]

    def _device(self) -> torch.device:
        import torch

        dev = self.model().model.embed_tokens.weight.device
        return torch.device("cpu") if dev.type == "meta" else dev

    def encode(self, prompt: str, images: Sequence[str]) -> dict[str, torch.Tensor]:
        """Rendered prompt + its image paths -> model inputs for a batch of one.

        Returns:
            ``input_ids`` / ``attention_mask`` ``(1, T)`` int64, ``image_attention_mask``
            ``(1, T, n_images)`` int64 (a token sees the latest image before it, IDEFICS'
            rule, by transformers' own helpers), ``pixel_values`` ``(1, n_images, 3, S, S)``
            float32 (the checkpoint's image processor).

        Raises:
            McqError: the number of ``<image>`` tokens differs from the number of images, or
                a token id beyond the model's embeddings.
        """
        import torch
        from PIL import Image
        from transformers.models.idefics.processing_idefics import (
            image_attention_mask_for_packed_input_ids,
            incremental_to_binary_attention_mask,
        )

        tok = self.extractor.processor().tokenizer
        ids = tok([prompt], add_special_tokens=False, return_tensors="pt")["input_ids"].long()
        n_img = int((ids == self._token(IMAGE_TOKEN)).sum())
        if n_img != len(images):
            raise McqError(f"prompt has {n_img} <image> tokens for {len(images)} images")
        cfg = self.extractor.config()
        n_emb = int(cfg.vocab_size) + int(getattr(cfg, "additional_vocab_size", 0))
        if int(ids.max()) >= n_emb:
            raise McqError(
                f"token id {int(ids.max())} is outside the model's {n_emb} embeddings; is this "
                f"the tokenizer of {self.extractor.hf_id!r}?"
            )
        max_pos = getattr(cfg, "max_position_embeddings", None)
        if max_pos and ids.shape[1] + self.max_new_tokens > int(max_pos):
            log.warning(
                "mcq: prompt of %d tokens + %d new tokens exceeds the model's "
                "max_position_embeddings (%d); answers may degrade",
                ids.shape[1],
                self.max_new_tokens,
                int(max_pos),
            )
        pixels = []
        for p in images:
            with Image.open(p) as im:
                pixels.append(self.extractor.preprocess(im.convert("RGB")))
        inc, _ = image_attention_mask_for_packed_input_ids(ids, tok, "pt")
        img_mask = incremental_to_binary_attention_mask(inc, "pt", num_classes=n_img).long()
        return {
            "input_ids": ids,
            "attention_mask": torch.ones_like(ids),
            "image_attention_mask": img_mask,
            "pixel_values": torch.stack(pixels)[None],
        }

    def _to(self, enc: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        dev = self._device()
        return {k: v.to(dev) for k, v in enc.items()}

    def generate(self, enc: dict[str, torch.Tensor], sample: bool, case_id: str) -> list[str]:
        """Answers for one encoded prompt: one greedy, or ``SAMPLING["num_samples"]`` sampled.

        The image tokens (``<image>``, ``<fake_token_around_image>``) are banned, generation
        stops at ``<end_of_utterance>`` (or ``</s>``), and only the new tokens are decoded
        (special tokens skipped, spaces stripped).
        """
        import torch

        tok = self.extractor.processor().tokenizer
        stop = [self._token(END_OF_UTTERANCE)]
        if tok.eos_token_id is not None:
            stop.append(int(tok.eos_token_id))
        kwargs: dict[str, Any] = {
            "max_new_tokens": self.max_new_tokens,
            "bad_words_ids": [[self._token(IMAGE_TOKEN)], [self._token(FAKE_TOKEN)]],
            "eos_token_id": stop,
            "pad_token_id": int(tok.pad_token_id if tok.pad_token_id is not None else stop[0]),
        }
        if sample:
            kwargs.update(
                do_sample=True,
                temperature=SAMPLING["temperature"],
                top_k=SAMPLING["top_k"],
                top_p=SAMPLING["top_p"],
                num_return_sequences=SAMPLING["num_samples"],
            )
            torch.manual_seed(bootstrap_seed("mcq-sample", case_id, self.seed))
        else:
            kwargs.update(do_sample=False, num_beams=1)
        enc = self._to(enc)
        with torch.inference_mode():
            out = self.model().generate(**enc, **kwargs)
        new = out[:, enc["input_ids"].shape[1] :]
        return [t.strip() for t in tok.batch_decode(new, skip_special_tokens=True)]

    def option_logliks(
        self, enc: dict[str, torch.Tensor], case: Case, prompt: str
    ) -> list[dict[str, float]]:
        """Per option: ``sum`` and ``mean`` log-probability (float, nats) of the tokens of
        ``" <k>. <option><end_of_utterance>"`` after the prompt, and ``n_tokens``.

        The option is tokenised together with the prompt (as the exemplars' answers are) and
        its tokens are those after the prompt's ``T`` tokens.

        One forward pass over the five continuations (right-padded; padding comes after every
        scored token, so it cannot change them). Float32 log-softmax over the full
        vocabulary.
        """
        import torch

        tok = self.extractor.processor().tokenizer
        eou = self._token(END_OF_UTTERANCE)
        prompt_ids = enc["input_ids"][0].tolist()
        p0 = len(prompt_ids)
        seqs, conts = [], []
        for i in range(len(case.options)):
            full = tok([prompt + " " + answer_text(case, i)], add_special_tokens=False)
            ids = list(full["input_ids"][0])
            if ids[:p0] != prompt_ids:  # the tokenizer merged across the prompt's end
                raise McqError(
                    f"case {case.id!r}: the option tokens do not start where the prompt ends "
                    f"(tokenizer merges across 'Assistant:'); cannot score option {i + 1}"
                )
            cont = [*ids[p0:], eou]
            seqs.append(prompt_ids + cont)
            conts.append(len(cont))
        t_max = max(map(len, seqs))
        pad = int(tok.pad_token_id or 0)
        ids = torch.full((len(seqs), t_max), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, s in enumerate(seqs):
            ids[r, : len(s)] = torch.tensor(s)
            mask[r, : len(s)] = 1
        img = enc["image_attention_mask"]
        last = img[:, -1:, :]  # continuation tokens see the test case's last image
        img_mask = torch.cat([img, last.expand(1, t_max - img.shape[1], -1)], dim=1)
        batch = {
            "input_ids": ids,
            "attention_mask": mask,
            "image_attention_mask": img_mask.expand(len(seqs), -1, -1).contiguous(),
            "pixel_values": enc["pixel_values"].expand(len(seqs), *enc["pixel_values"].shape[1:]),
        }
        batch = self._to(batch)
        with torch.inference_mode():
            logits = self.model()(**batch, use_cache=False).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1)
        target = batch["input_ids"][:, 1:]
        tok_lp = logp.gather(-1, target[..., None])[..., 0].cpu()
        out = []
        for r, n in enumerate(conts):
            lp = tok_lp[r, p0 - 1 : p0 - 1 + n]
            out.append({"sum": float(lp.sum()), "mean": float(lp.mean()), "n_tokens": n})
        return out


def score_case(
    scorer: Scorer, mode: str, exemplars: Sequence[Case], case: Case, prompt: str
) -> dict[str, Any]:
    """Score one case in one mode -> its result record (JSON types).

    Keys: ``id``, ``mode``, ``answer`` (0-based), ``readers_correct``, ``pred`` (index or
    ``None`` if unparsed), ``correct`` (bool), ``unparsed`` (bool; for ``sample``: no sample
    parsed), plus ``outputs`` (generated texts) and ``parsed`` (per output) for the
    generation modes, ``logliks`` (per option ``sum``/``mean``/``n_tokens``) for ``loglik``.
    For ``sample``, ``pred`` is the first sample's parse and ``correct`` means any of the
    three samples parses to the answer.

    Raises:
        McqError: unknown mode.
    """
    if mode not in MODES:
        raise McqError(f"unknown mode {mode!r}; valid: {list(MODES)} or 'all'")
    enc = scorer.encode(prompt, prompt_images(exemplars, case))
    rec: dict[str, Any] = {
        "id": case.id,
        "mode": mode,
        "answer": case.answer,
        "readers_correct": case.readers_correct,
    }
    if mode == "loglik":
        ll = scorer.option_logliks(enc, case, prompt)
        sums = [x["sum"] for x in ll]
        pred = int(np.argmax(sums))  # ties -> the lowest index
        rec.update(pred=pred, correct=pred == case.answer, unparsed=False, logliks=ll)
        return rec
    outs = scorer.generate(enc, sample=mode == "sample", case_id=case.id)
    parsed = [parse_answer(o, case.options) for o in outs]
    rec.update(
        outputs=outs,
        parsed=parsed,
        pred=parsed[0],
        correct=any(p == case.answer for p in parsed),
        unparsed=all(p is None for p in parsed),
    )
    return rec


# ---------------------------------------------------------------------------------- metrics


def difficulty_bin(share: float | None) -> int | None:
    """Readers' share correct -> bin 0 (0-20 %, hardest) .. 4 (80-100 %); ``None`` stays."""
    if share is None:
        return None
    return min(int(share * 5), 4)


def chance_level(mode: str) -> float:
    """Accuracy of uniform guessing: 0.2 for one answer of five; for ``sample`` (correct if
    any of three independent uniform guesses is right) ``1 - 0.8 ** 3`` = 0.488."""
    return 1.0 - (1.0 - 1.0 / N_OPTIONS) ** SAMPLING["num_samples"] if mode == "sample" else 0.2


def _acc_ci(correct: np.ndarray, n_boot: int, seed: int) -> dict[str, Any]:
    n = int(correct.size)
    if n == 0:
        return {"n": 0, "n_correct": 0, "accuracy": None, "ci_low": None, "ci_high": None}
    counts = bootstrap_counts(correct, n_boot, seed, stratify=False)
    reps = counts @ correct.astype(np.float64) / n
    lo, hi = np.percentile(reps, [2.5, 97.5])
    return {
        "n": n,
        "n_correct": int(correct.sum()),
        "accuracy": float(correct.mean()),
        "ci_low": float(lo),
        "ci_high": float(hi),
    }


def summarize(
    records: Sequence[dict[str, Any]], mode: str, n_boot: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """One mode's records -> metrics.

    Returns:
        ``mode``, ``n``, ``n_correct``, ``accuracy``, ``ci_low``, ``ci_high`` (95 % percentile
        bootstrap over cases, ``n_boot`` replicates; Efron & Tibshirani 1993 ch. 13; the
        replicates depend on the case ids and ``seed``, never on the model, so two models on
        the same cases are paired), ``chance`` (:func:`chance_level`), ``unparsed_rate``
        (share of cases with no parsed answer) and ``unparsed_output_rate`` (share of
        generated outputs unparsed), ``n_no_difficulty`` (cases without ``readers_correct``)
        and ``by_difficulty``: five rows ``bin``, ``label`` (``"0-20%"`` ...), ``low``,
        ``high``, ``n``, ``n_correct``, ``accuracy``, ``ci_low``, ``ci_high``, ``p_vs_chance``
        (one-sided exact binomial test of accuracy > chance; ``None`` for an empty bin).
    """
    from scipy.stats import binomtest

    recs = sorted(records, key=lambda r: r["id"])
    ids = ",".join(r["id"] for r in recs)
    correct = np.array([bool(r["correct"]) for r in recs], dtype=bool)
    s = bootstrap_seed("mcq", hashlib.sha256(ids.encode()).hexdigest(), seed)
    out: dict[str, Any] = {"mode": mode, **_acc_ci(correct, n_boot, s)}
    chance = chance_level(mode)
    out["chance"] = chance
    out["unparsed_rate"] = float(np.mean([r["unparsed"] for r in recs])) if recs else None
    outputs = [p for r in recs for p in r.get("parsed", [])]
    out["unparsed_output_rate"] = (
        float(np.mean([p is None for p in outputs])) if outputs else (0.0 if recs else None)
    )
    bins = [difficulty_bin(r["readers_correct"]) for r in recs]
    out["n_no_difficulty"] = sum(b is None for b in bins)
    rows = []
    for b in range(len(DIFFICULTY_EDGES) - 1):
        lo, hi = DIFFICULTY_EDGES[b], DIFFICULTY_EDGES[b + 1]
        sel = np.array([x == b for x in bins], dtype=bool)
        row = {
            "bin": b,
            "label": f"{round(lo * 100)}-{round(hi * 100)}%",
            "low": lo,
            "high": hi,
            **_acc_ci(correct[sel], n_boot, bootstrap_seed("mcq-bin", s, b)),
        }
        row["p_vs_chance"] = (
            float(binomtest(row["n_correct"], row["n"], chance, alternative="greater").pvalue)
            if row["n"]
            else None
        )
        rows.append(row)
    out["by_difficulty"] = rows
    return out


def plot_by_difficulty(summaries: Sequence[dict[str, Any]], path: Path) -> Path:
    """Bar chart of accuracy by difficulty bin per mode, 95 % CI whiskers, chance lines (the
    paper's Fig. 1f layout: x = readers' share correct, hardest left). Writes a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_modes = max(1, len(summaries))
    width = 0.8 / n_modes
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    labels = [r["label"] for r in summaries[0]["by_difficulty"]] if summaries else []
    x = np.arange(len(labels))
    for k, s in enumerate(summaries):
        rows = s["by_difficulty"]
        acc = np.array([np.nan if r["accuracy"] is None else r["accuracy"] for r in rows])
        lo = np.array([np.nan if r["ci_low"] is None else r["ci_low"] for r in rows])
        hi = np.array([np.nan if r["ci_high"] is None else r["ci_high"] for r in rows])
        pos = x - 0.4 + width * (k + 0.5)
        bars = ax.bar(pos, np.nan_to_num(acc), width, label=f"{s['mode']} (n={s['n']})")
        err = np.vstack([np.nan_to_num(acc - lo), np.nan_to_num(hi - acc)])
        ax.errorbar(pos, np.nan_to_num(acc), yerr=err, fmt="none", ecolor="black", capsize=2)
        for p, r in zip(pos, rows, strict=True):
            ax.text(p, 0.01, f"{r['n']}", ha="center", va="bottom", fontsize=7)
        ax.axhline(s["chance"], color=bars.patches[0].get_facecolor(), ls="--", lw=1)
    ax.set_xticks(x, labels)
    ax.set_xlabel("readers answering correctly (difficulty; hardest left)")
    ax.set_ylabel("model accuracy")
    ax.set_ylim(0, 1)
    ax.set_title("Accuracy by difficulty (dashed: chance; numbers: cases per bin)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _fmt(v: Any, nd: int = 3) -> str:
    return "-" if v is None else (f"{v:.{nd}f}" if isinstance(v, float) else str(v))


def report_markdown(summary: dict[str, Any]) -> str:
    """The offline report (``mcq_report.md``): accuracy table and by-difficulty tables."""
    lines = [
        "# Multiple-choice evaluation",
        "",
        f"cases: `{summary['cases']}` ({summary['n_cases']} cases, "
        f"exemplars {summary['exemplars']}); model: `{summary['model']}`",
        "",
        "| mode | n | accuracy | 95% CI | chance | unparsed |",
        "|---|---|---|---|---|---|",
    ]
    for s in summary["modes"].values():
        lines.append(
            f"| {s['mode']} | {s['n']} | {_fmt(s['accuracy'])} | "
            f"[{_fmt(s['ci_low'])}, {_fmt(s['ci_high'])}] | {_fmt(s['chance'])} | "
            f"{_fmt(s['unparsed_rate'])} |"
        )
    for s in summary["modes"].values():
        lines += [
            "",
            f"## {s['mode']}: accuracy by difficulty (readers' share correct)",
            "",
            "| readers correct | n | accuracy | 95% CI | p (> chance) |",
            "|---|---|---|---|---|",
        ]
        for r in s["by_difficulty"]:
            lines.append(
                f"| {r['label']} | {r['n']} | {_fmt(r['accuracy'])} | "
                f"[{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}] | {_fmt(r['p_vs_chance'], 4)} |"
            )
    lines += ["", "![accuracy by difficulty](mcq_by_difficulty.png)", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------- evaluation


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _read_results(path: Path) -> list[dict[str, Any]]:
    """Finished records; a torn last line (killed mid-write) is dropped with a warning."""
    if not path.is_file():
        return []
    recs = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            recs.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines):
                log.warning("mcq: dropping a torn last line of %s (killed mid-write)", path)
                continue
            raise McqError(f"{path}:{i}: corrupt result line") from None
    return recs


def evaluate(
    extractor: IdeficsExtractor,
    cases_path: str | Path,
    out_dir: str | Path,
    modes: Sequence[str] = MODES,
    max_new_tokens: int = 32,
    seed: int = 0,
    n_boot: int = 1000,
    on_case: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run the two-shot MCQ evaluation; resumable.

    Writes into ``out_dir``: ``mcq_run.json`` (model fingerprint, case-file sha256, settings;
    a later run into the same folder must match it), ``mcq_prompts.jsonl`` (per test case:
    ``id``, ``prompt``, ``images``), ``mcq_results.jsonl`` (one record per mode and case,
    :func:`score_case`; appended and flushed after each case, so a killed run loses at most
    the case in progress; a rerun skips every (mode, id) already there), ``mcq_summary.json``
    (:func:`summarize` per mode plus ``cases``, ``n_cases``, ``exemplars``, ``model``),
    ``mcq_by_difficulty.png`` and ``mcq_report.md``.

    Args:
        extractor: an ``IdeficsExtractor`` (any prompt; its model and processor are used).
        on_case: called with each new record after it is written (tests use it to stop).

    Returns:
        The summary dict (as written to ``mcq_summary.json``).

    Raises:
        McqError: bad case file (see :func:`read_cases`), unknown mode, or ``out_dir`` holding
            results of another model, case file or settings.
    """
    modes = list(dict.fromkeys(modes))
    for m in modes:
        if m not in MODES:
            raise McqError(f"unknown mode {m!r}; valid: {list(MODES)} or 'all'")
    cases_path = Path(cases_path)
    cases = read_cases(cases_path)
    exemplars, tests = split_exemplars(cases)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    run = {
        "mcq_version": MCQ_VERSION,
        "model": extractor.fingerprint() | {"rendered_prompt": None, "pooling": None},
        "cases_sha256": _file_sha256(cases_path),
        "max_new_tokens": int(max_new_tokens),
        "seed": int(seed),
        "sampling": SAMPLING,
    }
    run_file = out / "mcq_run.json"
    if run_file.is_file():
        old = json.loads(run_file.read_text())
        if old != json.loads(json.dumps(run)):
            diff = sorted(k for k in run if old.get(k) != json.loads(json.dumps(run))[k])
            raise McqError(
                f"{out} holds MCQ results of a different run (differs in {diff}); "
                "use another --out or delete it"
            )
    else:
        run_file.write_text(json.dumps(run, indent=2))
    bos = extractor.processor().tokenizer.bos_token or "<s>"
    prompts = {c.id: render_prompt(exemplars, c, bos) for c in tests}
    with open(out / "mcq_prompts.jsonl", "w", encoding="utf-8") as f:
        for c in tests:
            rec = {"id": c.id, "prompt": prompts[c.id], "images": prompt_images(exemplars, c)}
            f.write(json.dumps(rec) + "\n")
    res_path = out / "mcq_results.jsonl"
    records = _read_results(res_path)
    if res_path.is_file():  # rewrite without a torn line before appending
        res_path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    done = {(r["mode"], r["id"]) for r in records}
    if done:
        log.info("mcq: resuming, %d records already in %s", len(done), res_path)
    scorer = Scorer(extractor, max_new_tokens=max_new_tokens, seed=seed)
    with open(res_path, "a", encoding="utf-8") as f:
        for mode in modes:
            t0 = time.perf_counter()
            for c in tests:
                if (mode, c.id) in done:
                    continue
                rec = score_case(scorer, mode, exemplars, c, prompts[c.id])
                f.write(json.dumps(rec) + "\n")
                f.flush()
                os.fsync(f.fileno())
                records.append(rec)
                if on_case is not None:
                    on_case(rec)
            log.info("mcq: %s done in %.1f s", mode, time.perf_counter() - t0)
    test_ids = {c.id for c in tests}
    summary: dict[str, Any] = {
        "cases": str(cases_path),
        "n_cases": len(cases),
        "n_test": len(tests),
        "exemplars": [c.id for c in exemplars],
        "model": extractor.hf_id,
        "modes": {},
    }
    for mode in modes:
        recs = [r for r in records if r["mode"] == mode and r["id"] in test_ids]
        summary["modes"][mode] = summarize(recs, mode, n_boot=n_boot, seed=seed)
    (out / "mcq_summary.json").write_text(json.dumps(summary, indent=2))
    plot_by_difficulty(list(summary["modes"].values()), out / "mcq_by_difficulty.png")
    (out / "mcq_report.md").write_text(report_markdown(summary))
    return summary


# ---------------------------------------------------------------------------------- logging


def log_wandb(summary: dict[str, Any], out_dir: Path, project: str = "medprobe") -> dict[str, Any]:
    """Log a summary to W&B (``auto``: online with an API key, else offline; sync later).

    Logs ``mcq/<mode>/accuracy`` (+ ``ci_low``, ``ci_high``, ``unparsed_rate``), a table of
    the by-difficulty rows and the figure. ``finish()`` is always called.
    """
    import wandb

    from medprobe.tracking import resolve_mode

    key = json.dumps({k: summary[k] for k in ("cases", "model", "exemplars")}, sort_keys=True)
    run_id = "mcq-" + hashlib.sha256(key.encode()).hexdigest()[:16]
    run = wandb.init(
        project=project,
        id=run_id,
        name=f"mcq {Path(summary['model']).name} {Path(summary['cases']).name}",
        dir=str(out_dir),
        mode=resolve_mode(os.environ.get("WANDB_MODE", "auto")),
        resume="allow",
        reinit="finish_previous",
        config={k: summary[k] for k in ("cases", "n_cases", "exemplars", "model")},
        settings=wandb.Settings(console="off", silent=True),
    )
    try:
        flat: dict[str, Any] = {}
        rows = []
        for mode, s in summary["modes"].items():
            for k in ("accuracy", "ci_low", "ci_high", "unparsed_rate", "chance"):
                flat[f"mcq/{mode}/{k}"] = s[k]
            for r in s["by_difficulty"]:
                rows.append([mode, r["label"], r["n"], r["accuracy"], r["ci_low"], r["ci_high"]])
        run.log(flat)
        for k, v in flat.items():
            run.summary[k] = v
        cols = ["mode", "readers_correct", "n", "accuracy", "ci_low", "ci_high"]
        run.log({"mcq/by_difficulty": wandb.Table(columns=cols, data=rows)})
        png = out_dir / "mcq_by_difficulty.png"
        if png.is_file():
            run.log({"mcq/by_difficulty_fig": wandb.Image(str(png))})
        info = {"id": run_id, "dir": run.dir}
    finally:
        run.finish()
    return info


# -------------------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m medprobe.mcq --model M --cases C --mode all --out DIR``; see docs/mcq.md."""
    from medprobe.extractors.base import ExtractorError
    from medprobe.extractors.idefics import IdeficsExtractor

    ap = argparse.ArgumentParser(prog="python -m medprobe.mcq", description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="hub id or local IDEFICS directory")
    ap.add_argument("--cases", required=True, help="JSONL case file (docs/mcq.md)")
    ap.add_argument("--mode", default="all", choices=[*MODES, "all"])
    ap.add_argument("--out", required=True, help="output folder (rerun the same to resume)")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32", "float16"])
    ap.add_argument("--quantization", default="none", choices=["none", "8bit", "4bit"])
    ap.add_argument("--device-map", default="auto", help="accelerate placement (auto, cpu, ...)")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--tracker", default="none", choices=["none", "wandb"])
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        ext = IdeficsExtractor(
            args.model,
            "Question: What's on this image? Answer:",  # unused: the MCQ prompts are built here
            dtype=args.dtype,
            quantization=args.quantization,
            device_map=args.device_map,
            truncate=False,
        )
        modes = list(MODES) if args.mode == "all" else [args.mode]
        summary = evaluate(
            ext,
            args.cases,
            args.out,
            modes=modes,
            max_new_tokens=args.max_new_tokens,
            seed=args.seed,
            n_boot=args.n_boot,
        )
    except (McqError, ExtractorError) as e:
        print(f"medprobe.mcq: error: {e}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        print("medprobe.mcq: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    out = Path(args.out)
    if args.tracker == "wandb":
        info = log_wandb(summary, out)
        print(f"W&B run {info['id']} ({info['dir']})")
    print((out / "mcq_report.md").read_text())
    print(f"results: {out / 'mcq_results.jsonl'}  summary: {out / 'mcq_summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
