"""Accuracy, bootstrap CI, by-difficulty bins against chance; the W&B payload of a summary."""

from __future__ import annotations

from pathlib import Path

import pytest
from scipy.stats import binomtest

from medprobe.mcq import chance_level, plot_by_difficulty, report_markdown, summarize, wandb_log


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


def _summary() -> dict:
    recs = [
        {"id": f"c{i}", "mode": m, "readers_correct": 0.1 + 0.2 * i, "correct": i % 2 == 0,
         "unparsed": False, "parsed": [0]}
        for m in ("greedy", "loglik") for i in range(5)
    ]  # fmt: skip
    modes = {m: summarize([r for r in recs if r["mode"] == m], m, n_boot=50) for m in ("greedy", "loglik")}  # fmt: skip
    return {"cases": "/data/cases.jsonl", "n_cases": 7, "n_test": 5, "exemplars": ["e1", "e2"],
            "model": "/models/idefics-9b", "modes": modes}  # fmt: skip


def test_report_markdown_tables() -> None:
    md = report_markdown(_summary())
    assert "| greedy | 5 | 0.600 | [" in md and "| loglik | 5 | 0.600 | [" in md
    assert md.count("| readers correct | n | accuracy | 95% CI | p (> chance) |") == 2
    assert "| 0-20% | 1 | 1.000 | [1.000, 1.000] |" in md
    assert md.rstrip().endswith("![accuracy by difficulty](mcq_by_difficulty.png)")


def test_wandb_payload_of_a_summary(tmp_path: Path) -> None:
    """What ``--tracker wandb`` logs, as plain data (the only wandb calls are in log_wandb)."""
    s = _summary()
    log = wandb_log(s, tmp_path)
    assert log.run_id.startswith("mcq-") and len(log.run_id) == 4 + 16
    assert wandb_log(dict(s, n_cases=99), tmp_path).run_id == log.run_id  # keyed on what defines it
    assert wandb_log(dict(s, model="/models/other"), tmp_path).run_id != log.run_id
    assert log.name == "mcq idefics-9b cases.jsonl"
    assert log.config == {"cases": "/data/cases.jsonl", "n_cases": 7, "exemplars": ["e1", "e2"],
                          "model": "/models/idefics-9b"}  # fmt: skip
    g = s["modes"]["greedy"]
    assert log.metrics["mcq/greedy/accuracy"] == g["accuracy"] == 0.6
    assert set(log.metrics) == {f"mcq/{m}/{k}" for m in ("greedy", "loglik")
                                for k in ("accuracy", "ci_low", "ci_high", "unparsed_rate", "chance")}  # fmt: skip
    assert log.table_columns == ["mode", "readers_correct", "n", "accuracy", "ci_low", "ci_high"]
    assert len(log.table_rows) == 10 and log.table_rows[0][:3] == ["greedy", "0-20%", 1]
    assert log.figure is None
    plot_by_difficulty(list(s["modes"].values()), tmp_path / "mcq_by_difficulty.png")
    assert wandb_log(s, tmp_path).figure == tmp_path / "mcq_by_difficulty.png"
