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


class _FakeScorer:
    """Scores a short option best by summed log-likelihood, a long one best per token."""

    # option 0: 2 tokens, -1.0 each (sum -2.0, mean -1.0); option 3: 8 tokens, -0.5 each
    # (sum -4.0, mean -0.5); the others lower in both.
    LL = [(-2.0, 2), (-9.0, 3), (-9.0, 3), (-4.0, 8), (-9.0, 3)]

    def encode(self, prompt: str, images: list[str]) -> dict:
        return {}

    def option_logliks(self, enc: dict, case: object, prompt: str) -> list[dict[str, float]]:
        return [{"sum": s, "mean": s / n, "n_tokens": n} for s, n in self.LL]


def test_loglik_sum_and_mean_choose_differently_and_both_are_reported() -> None:
    from mcq_helpers import pinned_cases

    from medprobe.mcq import McqError, loglik_choice, score_case

    ex, case = pinned_cases()  # the test case's answer is option 0
    fake = _FakeScorer()
    by_sum = score_case(fake, "loglik", ex, case, "prompt")  # type: ignore[arg-type]
    by_mean = score_case(fake, "loglik", ex, case, "prompt", loglik_norm="mean")  # type: ignore[arg-type]
    assert (by_sum["pred"], by_sum["correct"], by_sum["loglik_norm"]) == (0, True, "sum")
    assert (by_mean["pred"], by_mean["correct"], by_mean["loglik_norm"]) == (3, False, "mean")
    assert by_sum["pred_sum"] == by_mean["pred_sum"] == 0
    assert by_sum["pred_mean"] == by_mean["pred_mean"] == 3
    assert loglik_choice(by_sum["logliks"], "mean") == 3
    with pytest.raises(McqError, match="loglik norm"):
        score_case(fake, "loglik", ex, case, "prompt", loglik_norm="max")  # type: ignore[arg-type]

    recs = [dict(by_sum, id=f"c{i}") for i in range(4)]
    s = summarize(recs, "loglik", n_boot=50)
    assert s["loglik_norm"] == "sum" and s["accuracy"] == 1.0
    assert s["by_loglik_norm"]["sum"]["accuracy"] == 1.0
    assert s["by_loglik_norm"]["mean"]["accuracy"] == 0.0
    s_mean = summarize([dict(by_mean, id=f"c{i}") for i in range(4)], "loglik", n_boot=50)
    assert s_mean["loglik_norm"] == "mean" and s_mean["accuracy"] == 0.0
    assert s_mean["by_loglik_norm"] == s["by_loglik_norm"]  # both reported either way
    md = report_markdown({**_summary(), "modes": {"loglik": s}})
    assert "loglik decided by the `sum` log-likelihood" in md
    assert "| sum | 1.000 | [1.000, 1.000] |" in md and "| mean | 0.000 | [0.000, 0.000] |" in md
    log = wandb_log({**_summary(), "modes": {"loglik": s}}, Path("/nonexistent"))
    assert log.metrics["mcq/loglik/accuracy_sum"] == 1.0
    assert log.metrics["mcq/loglik/accuracy_mean"] == 0.0
