"""Generated answer text -> option index; unmatched or ambiguous answers are never guessed.

The table holds realistic outputs of instruct models in the styles they write (issue 12, item
5): capitalised ``Answer:``, markdown emphasis, "the answer is X" followed by a discussion of
other options, a numbered answer followed by a reason naming another option (what the
exemplars prime), spelled-out numbers, the option text followed by an explanation; and outputs
that must stay unparsed (a bare pronoun, refusals, two options named equally).
"""

from __future__ import annotations

import pytest

from medprobe.mcq import parse_answer

OPTS = ["Lipoma", "Melanoma", "Nevus", "Wart", "Burn"]

CASES: list[tuple[str, int | None]] = [
    # the bare forms
    ("3", 2),
    ("3. Nevus", 2),
    ("(3)", 2),
    ("C.", 2),
    ("(E)", 4),
    ("D", 3),
    ("nevus", 2),
    ("MELANOMA", 1),
    ("It is a melanoma.", 1),
    ("A lipoma", 0),  # "A" followed by a word is an article, not a letter
    # capitalised / labelled answers
    ("Answer: D", 3),
    ("ANSWER: 4", 3),
    ("Answer: 4", 3),
    ("answer - 2", 1),
    ("Final answer: B", 1),
    ("The answer is: 5. Burn", 4),
    # markdown emphasis
    ("**B**", 1),
    ("*B.*", 1),
    ("**Answer: C** — Nevus", 2),
    ("**3. Nevus**\n\nThe lesion is symmetric with even pigmentation.", 2),
    ("The correct answer is **4 (Wart)**.", 3),
    ("## Answer\n**Melanoma**", 1),
    # "the answer is X" followed by a discussion naming other options
    ("The answer is 3. Options 1 and 2 are less likely because the lesion is small.", 2),
    ("The correct answer is melanoma. A nevus would be symmetric, and a lipoma is soft.", 1),
    ("The most likely diagnosis is a wart; a nevus or melanoma would be pigmented.", 3),
    ("The answer is C. Melanoma is unlikely given the regular border (B).", 2),
    ("I would choose option 4 (Wart). Option 2, melanoma, does not fit.", 3),
    ("I'd go with 1, lipoma; nevus is possible but less likely.", 0),
    # a numbered answer followed by a reason naming another option (the exemplars' style)
    ("2. Melanoma Reason: asymmetric lesion; a nevus would be regular.", 1),
    ("2. Melanoma\nReason: the irregular border argues against option 3 (nevus).", 1),
    ("4. Wart. Reason: verrucous surface, unlike a lipoma (option 1).", 3),
    ("5) Burn - the blistering excludes 2. Melanoma.", 4),
    # spelled-out numbers
    ("Three.", 2),
    ("three", 2),
    ("The third option.", 2),
    ("The answer is the second option, melanoma.", 1),
    ("Answer: four", 3),
    ("I would pick the fifth one.", 4),
    ("Option five is correct.", 4),
    # the option text followed by an explanation
    ("Nevus. The lesion is symmetric with regular borders, which argues against melanoma.", 2),
    ("Melanoma, given the irregular border and colour variegation; a nevus is unlikely.", 1),
    ("Lipoma - a soft, mobile subcutaneous mass; not a wart.", 0),
    ("Wart\n\nExplanation: a burn would have a history of injury.", 3),
    # answers stated after the fact
    ("Option 3 is correct.", 2),
    ("Melanoma is the most likely diagnosis.", 1),
    ("Option 1 (Lipoma) is less likely; the answer is 3.", 2),
    ("Based on the image, choice C is the correct answer, not melanoma.", 2),
    # must stay unparsed
    ("I", None),  # a bare pronoun with options A-E
    ("I.", None),
    ("I'm sorry, but I can't provide a medical diagnosis from an image.", None),
    ("As an AI language model, I cannot answer medical questions.", None),
    ("A or B", None),  # two options named equally
    ("Answer: 2 or 3", None),
    ("B and C are both possible.", None),
    ("Either melanoma or nevus.", None),
    ("Melanoma or nevus", None),
    ("It could be a nevus or a melanoma.", None),
    ("Nevus is less likely than melanoma here.", None),  # no answer stated, two named
    ("The answer is not clear from the image.", None),
    ("3. Melanoma", None),  # number and text disagree
    ("6", None),  # no such option
    ("Answer: F", None),
    ("blue", None),
    ("First, let's look at the lesion's border.", None),
    ("2 lesions are visible.", None),
    ("", None),
    ("   ", None),
    ("\ufffd\ufffd", None),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_parse_answer(text: str, expected: int | None) -> None:
    assert parse_answer(text, OPTS) == expected


def test_the_table_covers_the_issue() -> None:
    assert len(CASES) >= 40
    assert sum(e is None for _, e in CASES) >= 10


def test_only_offered_options_are_returned() -> None:
    three = ["Lipoma", "Melanoma", "Nevus"]
    assert parse_answer("D", three) is None  # no fourth option: not a letter answer
    assert parse_answer("Answer: 4", three) is None
    assert parse_answer("The answer is five.", three) is None
    assert parse_answer("Answer: C", three) == 2
    assert parse_answer(None, three) is None  # type: ignore[arg-type]


def test_parse_answer_prefers_the_longer_overlapping_option() -> None:
    opts = ["grade 1", "grade 1 or 2", "grade 3", "grade 4", "normal"]
    assert parse_answer("grade 1 or 2", opts) == 1
    assert parse_answer("grade 1", opts) == 0
    assert parse_answer("Answer: grade 1 or 2, given the joint space.", opts) == 1
    assert parse_answer("Kellgren-Lawrence grade 2", [f"Kellgren-Lawrence grade {g}" for g in range(5)]) == 2  # fmt: skip
