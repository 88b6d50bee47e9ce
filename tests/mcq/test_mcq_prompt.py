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
