"""The two-shot prompt in the IDEFICS instruct chat format (pure strings), in two formats.

``format="paper"`` (:data:`FORMATS`; the paper preset, ``medprobe mcq`` default): the authors'
``nejm_image_challenge/nejm_test.py`` turns. Per case ``User:``, its images, then
``Question: <q>\nChoices:\n1. <o1>\n...\n5. <o5>\n`` and, for an exemplar,
``Assistant: <option text>.\n`` (the case file's ``Answer:`` line without its label), for the
test case ``Assistant:``; no vignette, no instruction line, no reason. Their transformers 4.x
``IdeficsProcessor`` (``add_end_of_utterance_token`` defaulting to True for the instruct
tokenizer, whose ``<end_of_utterance>`` is an additional special token) inserted
``<end_of_utterance>`` before every text item that directly follows another text item, i.e.
before the second and third ``User:``; transformers 5.x no longer does by default, so
:func:`render_prompt` writes it explicitly (tested against the processor's insertion rule).

``format="medprobe"`` (ours): one ``User:`` turn per case (images first, then vignette,
question, numbered choices and an instruction), closed by ``<end_of_utterance>``, the exemplars
answered by the ``Assistant:`` turn ``"<k>. <option>"`` (+ ``" Reason: ..."``); the test case
ends at ``Assistant:``.
"""

from __future__ import annotations

from collections.abc import Sequence

from medprobe.errors import McqError
from medprobe.extractors.idefics import END_OF_UTTERANCE, FAKE_TOKEN, IMAGE_TOKEN
from medprobe.mcq.cases import Case

INSTRUCTION = "Answer with the number of the correct choice."
#: ``paper`` (the authors' nejm_test.py turns) | ``medprobe`` (ours, with instruction).
FORMATS = ("paper", "medprobe")


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


def paper_text(case: Case, answered: bool) -> str:
    """One case's text item in the authors' format (``nejm_test.py``: lines 1-7 of the case's
    ``content.txt`` joined by ``\n``, then ``Assistant: <answer>.\n`` or ``Assistant:``).

    ``Question: <q>`` (the prefix added unless the question has it), ``Choices:``, the five
    options ``<k>. <option>``; an exemplar (``answered``) adds ``Assistant: <option text>.\n``,
    the test case ``Assistant:``. Spaces at either end are stripped, as the processor does.
    """
    q = case.question.strip()
    lines = [q if q.startswith("Question:") else f"Question: {q}", "Choices:"]
    lines += [f"{k}. {o}" for k, o in enumerate(case.options, start=1)]
    lines.append(f"Assistant: {case.options[case.answer]}.\n" if answered else "Assistant:")
    return "\n".join(lines).strip(" ")


def render_paper_prompt(exemplars: Sequence[Case], case: Case, bos_token: str = "<s>") -> str:
    """The exact text the authors' processor call read (``format="paper"``).

    ``<s>`` + per case ``User:`` + its images + :func:`paper_text`, the cases joined by
    ``<end_of_utterance>`` (what transformers 4.x inserted before each ``User:`` that follows a
    text item; written explicitly here because 5.x does not).
    """
    turns = [
        "User:" + _images_text(len(c.images)) + paper_text(c, answered=c is not case)
        for c in [*exemplars, case]
    ]
    return bos_token + END_OF_UTTERANCE.join(turns)


def render_prompt(
    exemplars: Sequence[Case], case: Case, bos_token: str = "<s>", format: str = "medprobe"
) -> str:
    """The exact text the model reads for ``case`` after ``exemplars`` (pure string).

    ``format="paper"``: :func:`render_paper_prompt`. ``format="medprobe"`` (ours):
    ``<s>`` + per exemplar its user turn and ``"Assistant: <k>. <option>[ Reason: ...]"``
    closed by ``<end_of_utterance>``, then the test case's user turn and ``"Assistant:"``.
    Each image is an ``<image>`` token between ``<fake_token_around_image>`` tokens (adjacent
    images share them, as in ``IdeficsProcessor``); images appear in exemplar order, then the
    test case's.

    Raises:
        McqError: an unknown ``format``.
    """
    if format not in FORMATS:
        raise McqError(f"unknown prompt format {format!r}; valid: {list(FORMATS)}")
    if format == "paper":
        return render_paper_prompt(exemplars, case, bos_token)
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
