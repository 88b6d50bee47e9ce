"""Generated answer text -> option index (never guessed: unmatched or ambiguous is ``None``)."""

from __future__ import annotations

import re
from collections.abc import Sequence

LETTERS = "ABCDE"


def normalise(text: str) -> str:
    """Lower case, every run of non-word characters one space, stripped (the comparison of
    answers with option texts, and of options with each other)."""
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
    body = f" {normalise(t)} "
    hits = [i for i, o in enumerate(options) if normalise(o) and f" {normalise(o)} " in body]
    hits = [
        i
        for i in hits
        if not any(j != i and normalise(options[i]) in normalise(options[j]) for j in hits)
    ]
    if len(hits) > 1:
        return None
    found.update(hits)
    return found.pop() if len(found) == 1 else None
