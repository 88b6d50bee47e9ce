"""The case file: validation that names the bad line and field, order, exemplar split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from medprobe.mcq import McqError, read_cases, split_exemplars


def _case_obj(i: int, img: str, **kw: object) -> dict:
    obj = {
        "id": f"c{i}",
        "date": f"2021-01-{10 - i:02d}",
        "images": [img],
        "question": "What is it?",
        "options": ["a1", "b2", "c3", "d4", "e5"],
        "answer": 1,
    }
    obj.update(kw)
    return obj


def test_read_cases_validates_and_names_the_bad_line(tmp_path: Path) -> None:
    Image.new("RGB", (8, 8)).save(tmp_path / "x.png")
    good = [json.dumps(_case_obj(i, "x.png", readers_correct=0.5)) for i in range(3)]
    f = tmp_path / "cases.jsonl"
    f.write_text("\n".join([good[0], "", good[1], good[2]]) + "\n")
    cases = read_cases(f)
    assert [c.id for c in cases] == ["c2", "c1", "c0"]  # sorted by date
    assert cases[0].images == (str((tmp_path / "x.png").resolve()),)
    assert cases[0].readers_correct == 0.5 and cases[0].answer == 1
    ex, test = split_exemplars(cases)
    assert [c.id for c in ex] == ["c2", "c1"] and [c.id for c in test] == ["c0"]

    bad = {
        "{not json": "not valid JSON",
        json.dumps({k: v for k, v in _case_obj(5, "x.png").items() if k != "answer"}): "'answer'",
        json.dumps(_case_obj(5, "x.png", answer=5)): "0-based index",
        json.dumps(_case_obj(5, "x.png", options=["a", "b"])): "list of 5",
        json.dumps(_case_obj(5, "x.png", options=["a", "A", "b", "c", "d"])): "distinct",
        json.dumps(_case_obj(5, "missing.png")): "image not found",
        json.dumps(_case_obj(5, "x.png", date="5/1/2021")): "ISO date",
        json.dumps(_case_obj(5, "x.png", readers_correct=43)): "share in [0, 1]",
        json.dumps(_case_obj(5, "x.png", extra=1)): "unknown field",
        json.dumps(_case_obj(0, "x.png")): "duplicate id 'c0' (first on line 1)",
    }
    for line, msg in bad.items():
        f.write_text("\n".join([good[0], "", good[1], line, good[2]]) + "\n")
        with pytest.raises(McqError) as e:
            read_cases(f)
        assert f"{f}:4:" in str(e.value) and msg in str(e.value), str(e.value)
    f.write_text(good[0] + "\n")
    with pytest.raises(McqError, match="need at least 3"):
        read_cases(f)
