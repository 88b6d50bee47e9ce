"""Shared by the MCQ tests: the IDEFICS special tokens and the pinned two-shot cases."""

from __future__ import annotations

from medprobe.mcq import Case

FAKE = "<fake_token_around_image>"
EOU = "<end_of_utterance>"


def pinned_cases() -> tuple[list[Case], Case]:
    """Exemplars E1 (one image, vignette, reason), E2 (two images) and test case T."""
    e1 = Case(
        id="e1",
        date="2020-01-01",
        images=("a.png",),
        question="What is the diagnosis?",
        options=("Lipoma", "Melanoma", "Nevus", "Wart", "Burn"),
        answer=1,
        vignette="A 30-year-old man with a rash.",
        reason="Asymmetric pigment.",
    )
    e2 = Case(
        "e2", "2020-01-08", ("b.png", "c.png"), "Which grade?", ("G0", "G1", "G2", "G3", "G4"), 4
    )
    t = Case("t", "2020-02-01", ("d.png",), "Which tissue?", ("Fat", "Muscle", "Mucus", "Tumour", "Debris"), 0)  # fmt: skip
    return [e1, e2], t
