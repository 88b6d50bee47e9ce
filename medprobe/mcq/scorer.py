"""IDEFICS answers and option scores for one case: multi-image prompt encoding and the scorers.

``greedy``: one greedy answer, matched to the options by :func:`~medprobe.mcq.parse.parse_answer`
(unmatched or ambiguous = unparsed, never guessed). ``sample``: temperature 1.0, top-k 50,
three samples; correct if any parses to the answer (the paper's top-3). ``loglik``: the summed
and the per-token mean log-probability of each option written as the exemplars write it,
``"<k>. <option><end_of_utterance>"``; the argmax of the chosen one (``loglik_norm``: ``sum``,
the default, or ``mean``) is the answer (deterministic, no parsing); both choices are recorded.
Generation bans the image tokens, decodes only new tokens and stops at ``<end_of_utterance>``.

The model, processor and image preprocessing are those of
:class:`medprobe.extractors.idefics.IdeficsExtractor` (its ``load``, ``processor`` and
``preprocess``); this module adds only multi-image prompt encoding and the scorers.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from medprobe.errors import McqError
from medprobe.extractors.idefics import END_OF_UTTERANCE, FAKE_TOKEN, IMAGE_TOKEN
from medprobe.mcq.cases import Case
from medprobe.mcq.parse import parse_answer
from medprobe.mcq.prompt import answer_text, prompt_images
from medprobe.mcq.protocol import SAMPLING, check_loglik_norm, check_modes
from medprobe.stats import bootstrap_seed

if TYPE_CHECKING:
    import torch

    from medprobe.extractors.idefics import IdeficsExtractor

log = logging.getLogger(__name__)


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
        batch_ids = torch.full((len(seqs), t_max), pad, dtype=torch.long)
        mask = torch.zeros_like(batch_ids)
        for r, s in enumerate(seqs):
            batch_ids[r, : len(s)] = torch.tensor(s)
            mask[r, : len(s)] = 1
        img = enc["image_attention_mask"]
        last = img[:, -1:, :]  # continuation tokens see the test case's last image
        img_mask = torch.cat([img, last.expand(1, t_max - img.shape[1], -1)], dim=1)
        batch: dict[str, torch.Tensor] = {
            "input_ids": batch_ids,
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


def loglik_choice(logliks: Sequence[dict[str, float]], norm: str) -> int:
    """The option of highest ``norm`` (``"sum"`` or ``"mean"``) log-likelihood; ties -> the
    lowest index."""
    return int(np.argmax([x[check_loglik_norm(norm)] for x in logliks]))


def score_case(
    scorer: Scorer,
    mode: str,
    exemplars: Sequence[Case],
    case: Case,
    prompt: str,
    loglik_norm: str = "sum",
) -> dict[str, Any]:
    """Score one case in one mode -> its result record (JSON types).

    Keys: ``id``, ``mode``, ``answer`` (0-based), ``readers_correct``, ``pred`` (index or
    ``None`` if unparsed), ``correct`` (bool), ``unparsed`` (bool; for ``sample``: no sample
    parsed), plus ``outputs`` (generated texts) and ``parsed`` (per output) for the
    generation modes; for ``loglik``: ``logliks`` (per option ``sum``/``mean``/``n_tokens``),
    ``loglik_norm`` (the one that decided ``pred``) and ``pred_sum``/``pred_mean`` (the choice
    of each).
    For ``sample``, ``pred`` is the first sample's parse and ``correct`` means any of the
    three samples parses to the answer.

    Raises:
        McqError: unknown mode or ``loglik_norm``.
    """
    check_modes([mode])
    check_loglik_norm(loglik_norm)
    enc = scorer.encode(prompt, prompt_images(exemplars, case))
    rec: dict[str, Any] = {
        "id": case.id,
        "mode": mode,
        "answer": case.answer,
        "readers_correct": case.readers_correct,
    }
    if mode == "loglik":
        ll = scorer.option_logliks(enc, case, prompt)
        by = {n: loglik_choice(ll, n) for n in ("sum", "mean")}
        pred = by[loglik_norm]
        rec.update(pred=pred, correct=pred == case.answer, unparsed=False, logliks=ll)
        rec.update(loglik_norm=loglik_norm, pred_sum=by["sum"], pred_mean=by["mean"])
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
