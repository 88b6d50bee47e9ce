"""The case file: JSONL, one multiple-choice case per line (format: docs/mcq.md).

Five options, a 0-based answer index; sorted by ``(date, id)``, the two earliest cases are the
exemplars of the two-shot prompt and the rest are test cases.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medprobe.errors import McqError
from medprobe.mcq.parse import normalise
from medprobe.mcq.protocol import N_EXEMPLARS, N_OPTIONS

REQUIRED = ("id", "date", "images", "question", "options", "answer")
OPTIONAL = ("vignette", "readers_correct", "reason")


@dataclass(frozen=True)
class Case:
    """One multiple-choice case.

    Attributes:
        id: unique case id (string).
        date: ISO date ``YYYY-MM-DD``; the two earliest cases are the exemplars.
        images: image paths, absolute (relative paths in the file are resolved against the
            case file's folder by :func:`read_cases`); at least one.
        question: the question text.
        options: exactly five answer texts, distinct.
        answer: 0-based index of the correct option (0..4).
        vignette: case description shown before the question ("" if none).
        readers_correct: share of readers who answered correctly, in [0, 1], or ``None``.
        reason: optional explanation, shown after the answer when the case is an exemplar.
    """

    id: str
    date: str
    images: tuple[str, ...]
    question: str
    options: tuple[str, ...]
    answer: int
    vignette: str = ""
    readers_correct: float | None = None
    reason: str = ""


def _case_from_obj(obj: Any, where: str, base: Path) -> Case:
    if not isinstance(obj, dict):
        raise McqError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    missing = [k for k in REQUIRED if k not in obj]
    if missing:
        raise McqError(f"{where}: missing field(s) {missing}; required: {list(REQUIRED)}")
    unknown = sorted(set(obj) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        raise McqError(f"{where}: unknown field(s) {unknown}; allowed: {[*REQUIRED, *OPTIONAL]}")
    cid = obj["id"]
    if not isinstance(cid, str | int) or isinstance(cid, bool) or not str(cid).strip():
        raise McqError(f"{where}: 'id' must be a non-empty string, got {cid!r}")
    date = obj["date"]
    if not isinstance(date, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", date):
        raise McqError(f"{where}: 'date' must be an ISO date YYYY-MM-DD, got {date!r}")
    images = obj["images"]
    if isinstance(images, str):
        images = [images]
    if not isinstance(images, list) or not images or not all(isinstance(p, str) for p in images):
        raise McqError(f"{where}: 'images' must be a path or a non-empty list of paths")
    paths = []
    for p in images:
        path = Path(p).expanduser()
        path = path if path.is_absolute() else base / path
        if not path.is_file():
            raise McqError(f"{where}: image not found: {path}")
        paths.append(str(path.resolve()))
    for key in ("question", "vignette", "reason"):
        if key in obj and not isinstance(obj[key], str):
            raise McqError(f"{where}: {key!r} must be a string, got {obj[key]!r}")
    if not obj["question"].strip():
        raise McqError(f"{where}: 'question' is empty")
    options = obj["options"]
    if (
        not isinstance(options, list)
        or len(options) != N_OPTIONS
        or not all(isinstance(o, str) and o.strip() for o in options)
    ):
        raise McqError(f"{where}: 'options' must be a list of {N_OPTIONS} non-empty strings")
    if len({normalise(o) for o in options}) != N_OPTIONS:
        raise McqError(f"{where}: 'options' must be distinct, got {options}")
    answer = obj["answer"]
    if not isinstance(answer, int) or isinstance(answer, bool) or not 0 <= answer < N_OPTIONS:
        raise McqError(
            f"{where}: 'answer' must be the 0-based index of the correct option (0..4), "
            f"got {answer!r}"
        )
    rc = obj.get("readers_correct")
    if rc is not None and (
        isinstance(rc, bool) or not isinstance(rc, int | float) or not 0.0 <= rc <= 1.0
    ):
        raise McqError(f"{where}: 'readers_correct' must be a share in [0, 1] or null, got {rc!r}")
    return Case(
        id=str(cid),
        date=date,
        images=tuple(paths),
        question=obj["question"].strip(),
        options=tuple(o.strip() for o in options),
        answer=int(answer),
        vignette=str(obj.get("vignette") or "").strip(),
        readers_correct=None if rc is None else float(rc),
        reason=str(obj.get("reason") or "").strip(),
    )


def read_cases(path: str | Path) -> list[Case]:
    """Read and validate a JSONL case file -> cases sorted by ``(date, id)``.

    Blank lines are skipped. Relative image paths are resolved against the file's folder.

    Raises:
        McqError: missing file; a line that is not JSON or not a valid case (the message names
            ``<file>:<line>`` and the field); duplicate ids; fewer than three cases (two
            exemplars + one test case).
    """
    path = Path(path)
    if not path.is_file():
        raise McqError(f"case file not found: {path}")
    cases: list[Case] = []
    seen: dict[str, int] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise McqError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
            case = _case_from_obj(obj, where, path.parent)
            if case.id in seen:
                raise McqError(f"{where}: duplicate id {case.id!r} (first on line {seen[case.id]})")
            seen[case.id] = lineno
            cases.append(case)
    if len(cases) < N_EXEMPLARS + 1:
        raise McqError(
            f"{path}: {len(cases)} case(s); need at least {N_EXEMPLARS + 1} "
            f"({N_EXEMPLARS} exemplars + test cases)"
        )
    return sorted(cases, key=lambda c: (c.date, c.id))


def split_exemplars(cases: Sequence[Case]) -> tuple[list[Case], list[Case]]:
    """Cases -> ``(the two earliest by (date, id), the rest in date order)``."""
    ordered = sorted(cases, key=lambda c: (c.date, c.id))
    return ordered[:N_EXEMPLARS], ordered[N_EXEMPLARS:]
