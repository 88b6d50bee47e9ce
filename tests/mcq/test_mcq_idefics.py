"""Few-shot multiple-choice evaluation (medprobe.mcq) on a tiny random IDEFICS: prompt
encoding, the three scorers, the resumable run and the command line.

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
from helpers import REPO, isolated_env
from mcq_helpers import EOU, FAKE, pinned_cases
from PIL import Image
from transformers import IdeficsForVisionText2Text

from medprobe.extractors.idefics import IdeficsExtractor
from medprobe.mcq import (
    Case,
    McqError,
    Scorer,
    evaluate,
    read_cases,
    render_prompt,
    score_case,
    split_exemplars,
)

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated")


def _builder():
    spec = importlib.util.spec_from_file_location(
        "build_mcq_cases", REPO / "experiments" / "build_mcq_cases.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def cases_file(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    out = tmp_path_factory.mktemp("mcq_cases") / "cases.jsonl"
    _builder().build_cases(shared_data, out, n=8, seed=0)
    return out


def _ext(tiny_idefics: Path) -> IdeficsExtractor:
    return IdeficsExtractor(
        str(tiny_idefics), "Question?", dtype="float32", device="cpu", truncate=False
    )


@pytest.fixture(scope="module")
def ext(tiny_idefics: Path) -> IdeficsExtractor:
    return _ext(tiny_idefics)


# ----------------------------------------------------------------------- prompt encoding


def test_rendered_prompt_tokenises_like_the_idefics_processor(
    ext: IdeficsExtractor, tmp_path: Path
) -> None:
    """Our rendering of a multi-image two-shot prompt = what IdeficsProcessor makes of the
    interleaved list (ids and image attention mask)."""
    ex, t = pinned_cases()
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


def test_paper_format_equals_the_authors_4x_processor_output(
    ext: IdeficsExtractor, tmp_path: Path
) -> None:
    """format="paper" = IdeficsProcessor on the authors' nejm_test.py list ["User:", image,
    text, "User:", image, text, "User:", image, text] with transformers 4.x's default for the
    instruct tokenizer, add_end_of_utterance_token=True (an <end_of_utterance> before a text
    item that follows a text item: the 2nd and 3rd "User:"). 5.x's processor no longer
    inserts it by default, so the rendering writes it; without it the ids would differ."""
    from medprobe.mcq.prompt import paper_text

    ex, t = pinned_cases()
    proc = ext.processor()
    imgs = [Image.new("RGB", (20 + i, 30), (40 * i, 0, 0)) for i in range(4)]
    for im, name in zip(imgs, ["a", "b", "c", "d"], strict=True):
        im.save(tmp_path / f"{name}.png")
    by_name = dict(zip(["a.png", "b.png", "c.png", "d.png"], imgs, strict=True))
    ex = [Case(**{**c.__dict__, "images": tuple(str(tmp_path / p) for p in c.images)}) for c in ex]
    t = Case(**{**t.__dict__, "images": (str(tmp_path / "d.png"),)})
    authors: list = []
    for c in [*ex, t]:
        authors += ["User:", *[by_name[Path(p).name] for p in c.images], paper_text(c, c is not t)]
    ref = proc(text=[authors], add_end_of_utterance_token=True, return_tensors="pt")
    prompt = render_prompt(ex, t, format="paper")
    enc = Scorer(ext).encode(prompt, [p for c in [*ex, t] for p in c.images])
    assert torch.equal(enc["input_ids"], ref["input_ids"])
    assert torch.equal(enc["image_attention_mask"], ref["image_attention_mask"].long())
    eou = proc.tokenizer.convert_tokens_to_ids("<end_of_utterance>")
    assert int((enc["input_ids"] == eou).sum()) == 2
    off = proc(text=[authors], add_end_of_utterance_token=False, return_tensors="pt")
    assert not torch.equal(off["input_ids"], ref["input_ids"])


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
    tiny_idefics: Path, cases_file: Path
) -> None:
    ext = _ext(tiny_idefics)
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
    ext: IdeficsExtractor, tiny_idefics: Path, cases_file: Path
) -> None:
    scorer = Scorer(ext)
    ex, tests = split_exemplars(read_cases(cases_file))
    case = tests[1]
    prompt = render_prompt(ex, case)
    rec = score_case(scorer, "loglik", ex, case, prompt)
    again = score_case(scorer, "loglik", ex, case, prompt)
    assert rec == again
    ref = IdeficsForVisionText2Text.from_pretrained(tiny_idefics).eval()
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


# ---------------------------------------------------------------------------- end to end


def test_cli_runs_all_three_modes_on_the_built_case_file(
    tiny_idefics: Path, cases_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "medprobe.mcq", "--model", str(tiny_idefics), "--cases",
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
