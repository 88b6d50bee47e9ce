"""The two-shot prompt in the IDEFICS instruct chat format (pure strings).

One ``User:`` turn per case (images first, then vignette, question and numbered choices), the
exemplars answered by the ``Assistant:`` turn ``"<k>. <option>"`` (+ ``" Reason: ..."``); the
test case ends at ``Assistant:``.
"""

from __future__ import annotations

from collections.abc import Sequence

from medprobe.extractors.idefics import END_OF_UTTERANCE, FAKE_TOKEN, IMAGE_TOKEN
from medprobe.mcq.cases import Case

INSTRUCTION = "Answer with the number of the correct choice."


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
