"""The two-shot prompt, pinned character for character (docs/mcq.md cites ``PINNED``)."""

from __future__ import annotations

from mcq_helpers import EOU, FAKE, pinned_cases

from medprobe.mcq import render_prompt

PINNED = (
    "<s>User:" + FAKE + "<image>" + FAKE + "A 30-year-old man with a rash.\n"
    "What is the diagnosis?\n1. Lipoma\n2. Melanoma\n3. Nevus\n4. Wart\n5. Burn\n"
    "Answer with the number of the correct choice." + EOU + "\n"
    "Assistant: 2. Melanoma Reason: Asymmetric pigment." + EOU + "\n"
    "User:" + FAKE + "<image>" + FAKE + "<image>" + FAKE + "Which grade?\n"
    "1. G0\n2. G1\n3. G2\n4. G3\n5. G4\n"
    "Answer with the number of the correct choice." + EOU + "\n"
    "Assistant: 5. G4" + EOU + "\n"
    "User:" + FAKE + "<image>" + FAKE + "Which tissue?\n"
    "1. Fat\n2. Muscle\n3. Mucus\n4. Tumour\n5. Debris\n"
    "Answer with the number of the correct choice." + EOU + "\nAssistant:"
)


def test_render_prompt_is_pinned() -> None:
    ex, t = pinned_cases()
    assert render_prompt(ex, t) == PINNED


#: format="paper": the authors' nejm_test.py turns (no vignette, instruction or reason), the
#: <end_of_utterance> their transformers 4.x processor inserted before each later "User:".
PINNED_PAPER = (
    "<s>User:" + FAKE + "<image>" + FAKE + "Question: What is the diagnosis?\nChoices:\n"
    "1. Lipoma\n2. Melanoma\n3. Nevus\n4. Wart\n5. Burn\nAssistant: Melanoma.\n" + EOU + ""
    "User:" + FAKE + "<image>" + FAKE + "<image>" + FAKE + "Question: Which grade?\nChoices:\n"
    "1. G0\n2. G1\n3. G2\n4. G3\n5. G4\nAssistant: G4.\n" + EOU + ""
    "User:" + FAKE + "<image>" + FAKE + "Question: Which tissue?\nChoices:\n"
    "1. Fat\n2. Muscle\n3. Mucus\n4. Tumour\n5. Debris\nAssistant:"
)


def test_paper_format_is_pinned() -> None:
    import pytest

    from medprobe.errors import McqError

    ex, t = pinned_cases()
    assert render_prompt(ex, t, format="paper") == PINNED_PAPER
    assert render_prompt(ex, t, format="medprobe") == render_prompt(ex, t) == PINNED
    with pytest.raises(McqError, match="unknown prompt format"):
        render_prompt(ex, t, format="chat")
