"""Few-shot multiple-choice evaluation (medprobe.mcq) on a tiny random IDEFICS.

Cases come from experiments/build_mcq_cases.py over the real images in ../shared/data. The
tiny model answers garbage (all unparsed), so generation and parsing of a right answer are
checked with a scripted ``lm_head``; log-likelihoods are checked against a direct forward
pass of the plain transformers model, one option at a time.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import importlib.util
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, isolated_env
from PIL import Image
from scipy.stats import binomtest
from tiny_models import save_tiny_idefics
from transformers import IdeficsForVisionText2Text

from medprobe.extractors.idefics import IdeficsExtractor
from medprobe.mcq import (
    Case,
    McqError,
    Scorer,
    chance_level,
    evaluate,
    parse_answer,
    read_cases,
    render_prompt,
    score_case,
    split_exemplars,
    summarize,
)

FAKE = "<fake_token_around_image>"
EOU = "<end_of_utterance>"
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated")


def _builder():
    spec = importlib.util.spec_from_file_location(
        "build_mcq_cases", REPO / "experiments" / "build_mcq_cases.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_idefics(tmp_path_factory.mktemp("tiny_idefics_mcq") / "m", seed=0)


@pytest.fixture(scope="module")
def cases_file(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    out = tmp_path_factory.mktemp("mcq_cases") / "cases.jsonl"
    _builder().build_cases(shared_data, out, n=8, seed=0)
    return out


def _ext(tiny_dir: Path) -> IdeficsExtractor:
    return IdeficsExtractor(
        str(tiny_dir), "Question?", dtype="float32", device="cpu", truncate=False
    )


@pytest.fixture(scope="module")
def ext(tiny_dir: Path) -> IdeficsExtractor:
    return _ext(tiny_dir)


# ------------------------------------------------------------------------------ case file


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


# -------------------------------------------------------------------------------- prompt

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


def _pinned_cases() -> tuple[list[Case], Case]:
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


def test_render_prompt_is_pinned() -> None:
    ex, t = _pinned_cases()
    assert render_prompt(ex, t) == PINNED


def test_rendered_prompt_tokenises_like_the_idefics_processor(
    ext: IdeficsExtractor, tmp_path: Path
) -> None:
    """Our rendering of a multi-image two-shot prompt = what IdeficsProcessor makes of the
    interleaved list (ids and image attention mask)."""
    ex, t = _pinned_cases()
    proc = ext.processor()
    imgs = [Image.new("RGB", (20 + i, 30), (40 * i, 0, 0)) for i in range(4)]
    for im, name in zip(imgs, ["a", "b", "c", "d"], strict=True):
        im.save(tmp_path / f"{name}.png")
    ex = [Case(**{**c.__dict__, "images": tuple(str(tmp_path / p) for p in c.images)}) for c in ex]
    t = Case(**{**t.__dict__, "images": (str(tmp_path / "d.png"),)})
    prompt = render_prompt(ex, t)
    pieces, k = [], 0
    for part in prompt.removeprefix("<s>").split(FAKE):
        if part == "<image>":
            pieces.append(imgs[k])
            k += 1
        elif part:
            pieces.append(part)
    ref = proc(text=[pieces], add_end_of_utterance_token=False, return_tensors="pt")
    enc = Scorer(ext).encode(prompt, [p for c in [*ex, t] for p in c.images])
    assert torch.equal(enc["input_ids"], ref["input_ids"])
    assert torch.equal(enc["image_attention_mask"], ref["image_attention_mask"].long())
    assert torch.allclose(enc["pixel_values"], ref["pixel_values"], atol=1e-6)


# ------------------------------------------------------------------------------- parsing


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


# -------------------------------------------------------------------------------- scoring


class _ScriptedHead(torch.nn.Module):
    """``lm_head`` stand-in: the image tokens always score highest (must be banned); the
    first step then prefers ``first``, every later step ``<end_of_utterance>``."""

    def __init__(self, vocab: int, banned: list[int], first: int, eou: int) -> None:
        super().__init__()
        self.vocab, self.banned, self.first, self.eou, self.calls = vocab, banned, first, eou, 0

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(*h.shape[:-1], self.vocab, dtype=h.dtype)
        logits[..., self.banned] = 100.0
        logits[..., self.first if self.calls == 0 else self.eou] = 60.0
        self.calls += 1
        return logits


def test_generation_bans_image_tokens_decodes_new_tokens_and_stops(
    tiny_dir: Path, cases_file: Path
) -> None:
    ext = _ext(tiny_dir)
    scorer = Scorer(ext, max_new_tokens=8)
    tok = ext.processor().tokenizer
    model = scorer.model()
    cases = read_cases(cases_file)
    ex, tests = split_exemplars(cases)
    case = tests[0]
    digit = tok.convert_tokens_to_ids(f"<0x{ord(str(case.answer + 1)):02X}>")
    ids = [tok.convert_tokens_to_ids(t) for t in ("<image>", FAKE, EOU)]
    for mode in ("greedy", "sample"):
        model.lm_head = _ScriptedHead(263, ids[:2], digit, ids[2])
        rec = score_case(scorer, mode, ex, case, render_prompt(ex, case))
        n = 1 if mode == "greedy" else 3
        assert rec["outputs"] == [str(case.answer + 1)] * n  # new tokens only, stopped at EOU
        assert rec["parsed"] == [case.answer] * n and rec["correct"] and not rec["unparsed"]
        assert model.lm_head.calls == 2  # prefill + one step that produced <end_of_utterance>


def test_loglik_matches_direct_forward_and_is_deterministic(
    ext: IdeficsExtractor, tiny_dir: Path, cases_file: Path
) -> None:
    scorer = Scorer(ext)
    ex, tests = split_exemplars(read_cases(cases_file))
    case = tests[1]
    prompt = render_prompt(ex, case)
    rec = score_case(scorer, "loglik", ex, case, prompt)
    again = score_case(scorer, "loglik", ex, case, prompt)
    assert rec == again
    ref = IdeficsForVisionText2Text.from_pretrained(tiny_dir).eval()
    tok = ext.processor().tokenizer
    enc = scorer.encode(prompt, [p for c in [*ex, case] for p in c.images])
    p0 = enc["input_ids"].shape[1]
    eou = tok.convert_tokens_to_ids(EOU)
    for i, got in enumerate(rec["logliks"]):
        full = tok(prompt + f" {i + 1}. {case.options[i]}", add_special_tokens=False)
        ids = torch.tensor([[*full["input_ids"], eou]])
        n = ids.shape[1] - p0
        img = enc["image_attention_mask"]
        img = torch.cat([img, img[:, -1:].expand(1, n, -1)], dim=1)
        with torch.inference_mode():
            logits = ref(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                image_attention_mask=img,
                pixel_values=enc["pixel_values"],
            ).logits
        lp = torch.log_softmax(logits[0, :-1].float(), -1).gather(-1, ids[0, 1:, None])[:, 0]
        assert got["n_tokens"] == n
        assert got["sum"] == pytest.approx(float(lp[p0 - 1 :].sum()), abs=1e-4)
    assert rec["pred"] == int(np.argmax([x["sum"] for x in rec["logliks"]]))


# -------------------------------------------------------------------------------- metrics


def test_summarize_values() -> None:
    shares = [0.1, 0.1, 0.3, 0.5, 0.5, 0.7, 0.9, 0.95, None, 1.0]
    correct = [0, 0, 1, 1, 0, 1, 1, 1, 1, 0]
    recs = [
        {"id": f"c{i}", "mode": "greedy", "readers_correct": s, "correct": bool(c),
         "unparsed": i == 0, "parsed": [None if i == 0 else 1]}
        for i, (s, c) in enumerate(zip(shares, correct, strict=True))
    ]  # fmt: skip
    s = summarize(recs, "greedy", n_boot=500)
    assert (s["n"], s["n_correct"], s["accuracy"]) == (10, 6, 0.6)
    assert 0.2 <= s["ci_low"] < 0.6 < s["ci_high"] <= 1.0
    assert s["unparsed_rate"] == 0.1 and s["unparsed_output_rate"] == 0.1
    assert s["chance"] == 0.2 and s["n_no_difficulty"] == 1
    rows = s["by_difficulty"]
    assert [r["label"] for r in rows] == ["0-20%", "20-40%", "40-60%", "60-80%", "80-100%"]
    assert [(r["n"], r["n_correct"]) for r in rows] == [(2, 0), (1, 1), (2, 1), (1, 1), (3, 2)]
    assert rows[4]["p_vs_chance"] == pytest.approx(
        binomtest(2, 3, 0.2, alternative="greater").pvalue
    )
    assert rows[0]["ci_low"] == rows[0]["ci_high"] == 0.0
    assert summarize(recs, "greedy", n_boot=500) == s  # seeded by case ids
    assert chance_level("sample") == pytest.approx(1 - 0.8**3)


# ---------------------------------------------------------------------------- end to end


def test_cli_runs_all_three_modes_on_the_built_case_file(
    tiny_dir: Path, cases_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "medprobe.mcq", "--model", str(tiny_dir), "--cases",
           str(cases_file), "--mode", "all", "--out", str(out), "--dtype", "float32",
           "--device-map", "cpu", "--n-boot", "200", "--tracker", "wandb"]  # fmt: skip
    r = subprocess.run(cmd, env=isolated_env(tmp_path), capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert "| loglik | 6 |" in r.stdout
    summary = json.loads((out / "mcq_summary.json").read_text())
    assert summary["n_cases"] == 8 and summary["n_test"] == 6
    assert summary["exemplars"] == ["synthetic-000-T8_knee_kl", "synthetic-001-T3_ham10000"]
    results = [json.loads(x) for x in (out / "mcq_results.jsonl").read_text().splitlines()]
    test_ids = {x["id"] for x in results}
    assert len(results) == 18 and len(test_ids) == 6  # 3 modes x 6 test cases, none twice
    assert {(x["mode"], x["id"]) for x in results} == {
        (m, i) for m in ("greedy", "sample", "loglik") for i in test_ids
    }
    for mode, s in summary["modes"].items():
        recs = [x for x in results if x["mode"] == mode]
        assert s["n"] == 6 and s["n_correct"] == sum(x["correct"] for x in recs)
        assert sum(row["n"] for row in s["by_difficulty"]) == 6  # synthetic shares, all binned
        assert [row["n"] for row in s["by_difficulty"]] == [1, 1, 2, 1, 1]
    assert all(len(x["outputs"]) == 3 for x in results if x["mode"] == "sample")
    assert summary["modes"]["loglik"]["unparsed_rate"] == 0.0
    prompts = [json.loads(x) for x in (out / "mcq_prompts.jsonl").read_text().splitlines()]
    assert len(prompts) == 6 and all(p["prompt"].count("<image>") == 3 for p in prompts)
    assert (out / "mcq_by_difficulty.png").stat().st_size > 10_000
    assert "accuracy by difficulty" in (out / "mcq_report.md").read_text()
    assert list((out / "wandb").glob("offline-run-*/run-*.wandb"))
    # the offline report picks up the MCQ results: tables and the by-difficulty figure
    from medprobe.report import make_report

    rep = make_report([tmp_path], tmp_path / "report")
    md = (tmp_path / "report" / "mcq_out.md").read_text()
    loglik = summary["modes"]["loglik"]
    assert f"{loglik['accuracy']:.3f}" in md and "accuracy by difficulty" in md
    assert (tmp_path / "report" / "mcq_by_difficulty_out.png") in rep["files"]
    # SIGKILL mid-run, then the same command again: only the rest is done, same summary
    killed = tmp_path / "killed"
    kcmd = [*cmd[:10], str(killed), *cmd[11:-2], "--tracker", "none"]
    proc = subprocess.Popen(kcmd, env=isolated_env(tmp_path), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    res = killed / "mcq_results.jsonl"
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if res.is_file() and len(res.read_text().splitlines()) >= 2:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    assert proc.wait() == -signal.SIGKILL
    n_before = len(res.read_text().splitlines())
    assert 2 <= n_before < 18
    r = subprocess.run(kcmd, env=isolated_env(tmp_path), capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert f"resuming, {n_before} records" in r.stderr
    again = json.loads((killed / "mcq_summary.json").read_text())
    assert again["modes"] == summary["modes"]
    assert len(res.read_text().splitlines()) == 18
    # a bad case file: one line, exit status 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text(cases_file.read_text().splitlines()[0] + "\n{oops\n")
    r = subprocess.run([*cmd[:6], str(bad), *cmd[7:]], env=isolated_env(tmp_path),
                       capture_output=True, text=True, cwd=REPO)  # fmt: skip
    assert r.returncode == 2 and f"{bad}:2: not valid JSON" in r.stderr


def test_killed_run_resumes_with_the_same_summary(
    ext: IdeficsExtractor, cases_file: Path, tmp_path: Path
) -> None:
    modes = ("greedy", "loglik")  # the CLI test kills a run of all three modes
    full = evaluate(ext, cases_file, tmp_path / "full", modes=modes, n_boot=200)
    out = tmp_path / "killed"
    seen: list[dict] = []

    def stop_after_4(rec: dict) -> None:
        seen.append(rec)
        if len(seen) == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        evaluate(ext, cases_file, out, modes=modes, n_boot=200, on_case=stop_after_4)
    with open(out / "mcq_results.jsonl", "a") as f:
        f.write('{"id": "torn')  # killed in the middle of a write
    second: list[dict] = []
    resumed = evaluate(ext, cases_file, out, modes=modes, n_boot=200, on_case=second.append)
    assert len(second) == 12 - 4
    assert {(r["mode"], r["id"]) for r in second}.isdisjoint({(r["mode"], r["id"]) for r in seen})
    assert resumed == full | {"cases": resumed["cases"]} and resumed["modes"] == full["modes"]
    lines = (out / "mcq_results.jsonl").read_text().splitlines()
    assert len(lines) == 12 and all(json.loads(x) for x in lines)
    with pytest.raises(McqError, match="different run"):
        evaluate(ext, cases_file, out, modes=modes, seed=1, n_boot=200)
