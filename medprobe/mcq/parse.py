"""Generated answer text -> option index (never guessed: unmatched or ambiguous is ``None``).

The reading follows what instruct models write when asked a numbered multiple-choice question:
a leading ``"3. Nevus"`` (what the exemplars prime), ``"Answer: D"``, ``"**B**"``, ``"The
answer is 3; option 1 is less likely ..."``, ``"the third option"``, ``"Nevus. The lesion is
symmetric, unlike a melanoma"``. The first explicitly stated answer wins and the discussion
after it never voids it; an answer that names two options (``"A or B"``), a refusal, or a bare
pronoun ``"I"`` is unparsed (``None``), counted and reported, never scored as a guess.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

LETTERS = "ABCDE"

#: Spelled-out option numbers (cardinal and ordinal).
_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5}
_ORDINALS = {"first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5}

#: Explicit statements before an answer: "answer: ", "the correct answer is", "I would choose".
_PRE_CUE = re.compile(
    r"\b(?:answer|response)\s*(?:is\s*)?[:=\-–—]\s*"
    r"|\b(?:answer|option|choice|diagnosis|response)\s+"
    r"(?:is|would\s+be|will\s+be|should\s+be|must\s+be)\s*:?\s*"
    r"|\bi\s*(?:would|will|'d|’d)?\s+(?:choose|pick|select|go\s+with)\s+",
    re.IGNORECASE,
)
#: Explicit statements after an answer: "<answer> is the correct answer".
_POST_CUE = re.compile(
    r"\s+(?:is|would\s+be|seems\s+to\s+be)\s+(?:the\s+|my\s+)?"
    r"(?:correct|right|best|most\s+likely|likeliest|answer)\b",
    re.IGNORECASE,
)
_MARKDOWN = re.compile(r"[*_`#]+")
_ARTICLE = re.compile(r"(?:(?:a|an|the)\s+)", re.IGNORECASE)
_PREFIX = re.compile(
    r"[\s(\[\"'“‘]*(?:(?:either|the|option|choice|number|no\.|#)\s*)*[\s(\[\"'“‘]*",
    re.IGNORECASE,
)
#: After an answer: delimiters up to what follows (agreeing option text, "or <other>").
_SKIP = re.compile(r"[\s.):\]\-–—(\[\"'”’=]*")
_OR = re.compile(r"(?:or|and|/|vs\.?|versus)\s*", re.IGNORECASE)
#: What may follow a leading answer for it to count as stated (not "Nevus is less likely").
_STRICT_END = re.compile(
    r"\s*(?:$|[.,;:!?)\]\n\-–—(]|(?:or|and|/)\b|(?:because|since|as|given|due|with|which)\b)",
    re.IGNORECASE,
)

#: An option named at the start only to be dismissed.
_DISMISSED = re.compile(
    r"(?:is|are|seems|would\s+be|can\s+be)\s+(?:not|less|unlikely|incorrect|wrong|ruled|excluded)",
    re.IGNORECASE,
)

_AMBIGUOUS = -1


def normalise(text: str) -> str:
    """Lower case, every run of non-word characters one space, stripped (the comparison of
    answers with option texts, and of options with each other)."""
    return " ".join(re.sub(r"[^\w]+", " ", text.lower()).split())


def _option_patterns(options: Sequence[str]) -> list[re.Pattern[str] | None]:
    """Per option a case-insensitive pattern of its words, any non-word run between them."""
    out: list[re.Pattern[str] | None] = []
    for o in options:
        words = normalise(o).split()
        out.append(re.compile(r"[\W_]+".join(map(re.escape, words)) + r"(?!\w)", re.I) if words else None)  # fmt: skip
    return out


def _option_at(text: str, pats: Sequence[re.Pattern[str] | None]) -> tuple[int, int] | None:
    """The longest option text starting at ``text``'s start (an article allowed before it)
    -> ``(index, end)``, or None."""
    art = _ARTICLE.match(text)
    starts = [0, art.end()] if art else [0]
    best: tuple[int, int] | None = None
    for i, p in enumerate(pats):
        if p is None:
            continue
        for s in starts:
            m = p.match(text, s)
            if m and (best is None or m.end() > best[1]):
                best = (i, m.end())
    return best


def _token_at(text: str, n: int, strict: bool) -> tuple[int, int] | None:
    """An option number, letter or spelled-out number at ``text``'s start -> ``(1-based
    number, end)`` (the number may exceed ``n``: the caller refuses it), or None.

    ``strict`` (the start of an answer with no cue before it): the token must be followed by a
    delimiter (``"3."``, ``"C)"``, ``"Three"``, end of text), and ordinals need a noun
    (``"the third option"``), so ``"First, ..."`` or ``"2 lesions"`` are not answers.
    """
    m = _PREFIX.match(text)
    p = m.end() if m else 0
    rest = text[p:]
    tok: tuple[int, int] | None = None
    chk = -1  # where a strict token's delimiter is looked for (default: its end)
    if d := re.match(r"([1-9])(?![\d%]|[.,]\d)\)?", rest):
        tok, chk = (int(d.group(1)), p + d.end()), p + d.end(1)
    elif (
        let := re.match(r"([A-E])(?=[.):,;\]]|\s*[-–—]|\s*$|\s+(?:or|and)\b|\s+[A-Z(\n])", rest)
    ) and LETTERS.index(let.group(1)) < max(n, 1):
        tok = (LETTERS.index(let.group(1)) + 1, p + let.end())
    elif w := re.match(r"(one|two|three|four|five)\b(?!\s+of\b)", rest, re.I):
        tok = (_WORDS[w.group(1).lower()], p + w.end())
    elif o := re.match(
        r"(first|second|third|fourth|fifth)(?:\s+(?:option|choice|one|answer)\b|(?=\s*[.,;)]|\s*$))",
        rest,
        re.I,
    ):
        if strict and not re.match(r"\w+\s+\w", o.group(0)):
            return None
        tok = (_ORDINALS[o.group(1).lower()], p + o.end())
    if tok is None:
        return None
    if strict and not _STRICT_END.match(text, chk if chk >= 0 else tok[1]):
        return None
    return tok


def _answer_at(
    text: str, options: Sequence[str], pats: Sequence[re.Pattern[str] | None], strict: bool
) -> int | None:
    """The answer stated at ``text``'s start -> 0-based index, ``_AMBIGUOUS`` (two options
    named, number and text disagreeing, or a number that is not offered), or None (no answer
    stated here)."""
    n = len(options)
    tok = _token_at(text, n, strict)
    opt = _option_at(text, pats)
    if opt is not None and (tok is None or opt[1] >= tok[1]):
        # an option text (longer than any number inside it: "grade 1 or 2")
        idx, end = opt
        if strict and not _STRICT_END.match(text, end):
            return None
    elif tok is not None:
        num, end = tok
        if not 1 <= num <= n:
            return _AMBIGUOUS
        idx = num - 1
        sk = _SKIP.match(text, end)
        lab = text[sk.end() if sk else end :]
        after = _option_at(lab, pats)
        if after is not None and _STRICT_END.match(lab, after[1]):  # its label, "3. Nevus"
            if after[0] != idx:
                return _AMBIGUOUS  # "3. Melanoma" with melanoma option 2
            end = (sk.end() if sk else end) + after[1]
    else:
        return None
    rest = text[end:]
    sk = _SKIP.match(rest)
    rest = rest[sk.end() :] if sk else rest
    if orm := _OR.match(rest):
        nxt = rest[orm.end() :]
        other = _answer_at(nxt, options, pats, strict=False)
        if other is None and (let := re.match(r"\(?([A-E])\)?(?!\w)", nxt)):
            other = LETTERS.index(let.group(1))  # "B and C are both possible"
        if other is not None and other != idx:
            return _AMBIGUOUS  # "A or B", "melanoma or nevus"
    if strict and _DISMISSED.match(re.sub(r"^\([^)]*\)\s*", "", rest)):
        return None  # "Option 1 (Lipoma) is less likely": named, not stated
    return idx


def _answer_before(text: str, pats: Sequence[re.Pattern[str] | None], n: int) -> int | None:
    """The answer that ends ``text`` (before a post-cue, "<answer> is correct") -> index,
    ``_AMBIGUOUS`` or None; returns the start position through the caller's search."""
    for i, p in enumerate(pats):
        if p is not None and re.search(r"(?<!\w)(?:" + p.pattern + r")\s*$", text, re.I):
            return i
    m = re.search(
        r"(?:^|[\s(])(?:option|choice|number|answer)?\s*\(?([1-9]|[A-E])\)?\s*$"
        r"|\b(one|two|three|four|five)\s*$|\bthe\s+(first|second|third|fourth|fifth)\s+"
        r"(?:option|choice|one|answer)\s*$",
        text,
        re.I,
    )
    if not m:
        return None
    if m.group(1):
        g = m.group(1)
        if g.isdigit():
            num = int(g)
        elif g in LETTERS and re.search(r"(?:option|choice|answer)\s*\(?[A-E]\)?\s*$|^\s*\(?[A-E]\)?\s*$", text, re.I):  # fmt: skip
            num = LETTERS.index(g) + 1
        else:
            return None  # "A" alone mid-sentence is an article
    elif m.group(2):
        num = _WORDS[m.group(2).lower()]
    else:
        num = _ORDINALS[m.group(3).lower()]
    return num - 1 if 1 <= num <= n else _AMBIGUOUS


def parse_answer(text: str, options: Sequence[str]) -> int | None:
    """A generated answer -> 0-based option index, or ``None`` (unparsed).

    Markdown emphasis (``*``, ``_``, backticks, ``#``) is dropped first. An answer is *stated*

    * at the start of the text: an option number ``"3."``, ``"(3)"``; a capital letter
      ``A``-``E`` followed by a delimiter (``"C."``, ``"D"``; ``"A lipoma"`` is an article);
      a spelled-out number (``"Three."``, ``"the third option"``); or an option's text
      followed by a delimiter or an explanation (``"Nevus. The lesion ..."``; not ``"Nevus
      is less likely"``);
    * after a cue: ``"Answer: D"``, ``"The correct answer is option 3"``, ``"The most likely
      diagnosis is melanoma"``, ``"I would choose C"``;
    * before a cue: ``"Option 3 is correct"``, ``"Melanoma is the most likely diagnosis"``.

    The first stated answer (by position) is the answer; whatever follows it (a discussion of
    other options) is ignored. A number followed by an option text must agree with it
    (``"3. Melanoma"`` with melanoma option 2 is ambiguous), an answer naming a second option
    (``"A or B"``, ``"melanoma or nevus"``) is ambiguous, and a number that is not offered
    (``"6"``) is refused: each gives ``None``. With no stated answer, the one option text
    found anywhere in the answer (whole words, case- and punctuation-insensitive; an option
    inside another found option's text is dropped: ``"grade 1"`` inside ``"grade 1 or 2"``)
    is the answer; several -> ``None``.

    Args:
        text: the generated answer (new tokens only).
        options: the offered option texts, in order (option ``k`` is number ``k``/letter).

    Returns:
        The 0-based index of an offered option, or ``None`` (unparsed: nothing stated,
        ambiguous, or not a string).
    """
    if not isinstance(text, str):
        return None
    t = _MARKDOWN.sub("", text).strip()
    if not t:
        return None
    pats = _option_patterns(options)
    n = len(options)
    stated: list[tuple[int, int]] = []  # (position, answer)
    lead = _answer_at(t, options, pats, strict=True)
    if lead is not None:
        stated.append((0, lead))
    for m in _PRE_CUE.finditer(t):
        a = _answer_at(t[m.end() :], options, pats, strict=False)
        if a is not None:
            stated.append((m.start(), a))
            break
    for m in _POST_CUE.finditer(t):
        clause = re.split(r"[.;:!?\n]\s", t[: m.start()])[-1]
        a = _answer_before(clause, pats, n)
        if a is not None:
            stated.append((m.start() - len(clause), a))
            break
    if stated:
        ans = min(stated, key=lambda s: s[0])[1]
        return None if ans == _AMBIGUOUS else ans
    body = f" {normalise(t)} "
    hits = [i for i, o in enumerate(options) if normalise(o) and f" {normalise(o)} " in body]
    hits = [
        i
        for i in hits
        if not any(j != i and normalise(options[i]) in normalise(options[j]) for j in hits)
    ]
    return hits[0] if len(hits) == 1 else None
