"""Generated answer text -> option index; unmatched or ambiguous answers are never guessed."""

from __future__ import annotations

import pytest

from medprobe.mcq import parse_answer


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3", 2),
        ("3. Nevus", 2),
        ("(3)", 2),
        ("Answer: 4", 3),
        ("C.", 2),
        ("(E)", 4),
        ("D", 3),
        ("nevus", 2),
        ("It is a melanoma.", 1),
        ("MELANOMA", 1),
        ("3. Melanoma", None),  # number and text disagree
        ("Melanoma or nevus", None),  # two options
        ("6", None),  # no such option
        ("A lipoma", 0),  # "A" followed by a word is an article, not a letter
        ("blue", None),
        ("", None),
        ("\ufffd\ufffd", None),
    ],
)
def test_parse_answer(text: str, expected: int | None) -> None:
    assert parse_answer(text, ["Lipoma", "Melanoma", "Nevus", "Wart", "Burn"]) == expected


def test_parse_answer_prefers_the_longer_overlapping_option() -> None:
    opts = ["grade 1", "grade 1 or 2", "grade 3", "grade 4", "normal"]
    assert parse_answer("grade 1 or 2", opts) == 1
    assert parse_answer("grade 1", opts) == 0
    assert parse_answer("Kellgren-Lawrence grade 2", [f"Kellgren-Lawrence grade {g}" for g in range(5)]) == 2  # fmt: skip
