"""The resumable two-shot evaluation of a case file, and its W&B logging.

Output folder: ``mcq_run.json`` (what the results belong to), ``mcq_prompts.jsonl``,
``mcq_results.jsonl`` (one line per mode and case, appended and flushed: a killed run resumes
where it stopped), ``mcq_summary.json``, ``mcq_by_difficulty.png``, ``mcq_report.md``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medprobe.errors import McqError
from medprobe.hashing import file_sha256
from medprobe.mcq.cases import read_cases, split_exemplars
from medprobe.mcq.prompt import prompt_images, render_prompt
from medprobe.mcq.protocol import MCQ_VERSION, MODES, SAMPLING, check_loglik_norm, check_modes
from medprobe.mcq.scorer import Scorer, score_case
from medprobe.mcq.summary import plot_by_difficulty, report_markdown, summarize

if TYPE_CHECKING:
    from medprobe.extractors.idefics import IdeficsExtractor

log = logging.getLogger(__name__)


def read_results(path: Path) -> list[dict[str, Any]]:
    """The finished records of a results file (none when it does not exist).

    A torn last line (a run killed mid-write) is dropped with a warning.

    Raises:
        McqError: a corrupt line that is not the last one.
    """
    if not path.is_file():
        return []
    recs = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            recs.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines):
                log.warning("mcq: dropping a torn last line of %s (killed mid-write)", path)
                continue
            raise McqError(f"{path}:{i}: corrupt result line") from None
    return recs


def _claim_folder(out: Path, run: dict[str, Any]) -> None:
    """Write ``mcq_run.json``, or check that the one there describes the same run.

    Raises:
        McqError: ``out`` holds results of a run that differs in model, case file or settings.
    """
    run_file = out / "mcq_run.json"
    if not run_file.is_file():
        run_file.write_text(json.dumps(run, indent=2))
        return
    old = json.loads(run_file.read_text())
    new = json.loads(json.dumps(run))
    if old != new:
        diff = sorted(k for k in run if old.get(k) != new[k])
        raise McqError(
            f"{out} holds MCQ results of a different run (differs in {diff}); "
            "use another --out or delete it"
        )


def _resume(res_path: Path) -> list[dict[str, Any]]:
    """The finished records; the file is rewritten without a torn line before appending."""
    records = read_results(res_path)
    if res_path.is_file():
        res_path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return records


def evaluate(
    extractor: IdeficsExtractor,
    cases_path: str | Path,
    out_dir: str | Path,
    modes: Sequence[str] = MODES,
    max_new_tokens: int = 32,
    seed: int = 0,
    n_boot: int = 1000,
    on_case: Callable[[dict[str, Any]], None] | None = None,
    format: str = "medprobe",
    loglik_norm: str = "sum",
) -> dict[str, Any]:
    """Run the two-shot MCQ evaluation; resumable.

    Writes into ``out_dir``: ``mcq_run.json`` (model fingerprint, case-file sha256, settings;
    a later run into the same folder must match it), ``mcq_prompts.jsonl`` (per test case:
    ``id``, ``prompt``, ``images``), ``mcq_results.jsonl`` (one record per mode and case,
    :func:`~medprobe.mcq.scorer.score_case`; appended and flushed after each case, so a
    killed run loses at most the case in progress; a rerun skips every (mode, id) already
    there), ``mcq_summary.json`` (:func:`~medprobe.mcq.summary.summarize` per mode plus
    ``cases``, ``n_cases``, ``n_test``, ``exemplars``, ``model``), ``mcq_by_difficulty.png``
    and ``mcq_report.md``.

    Args:
        extractor: an ``IdeficsExtractor`` (any prompt; its model and processor are used).
        cases_path: the JSONL case file (:func:`~medprobe.mcq.cases.read_cases`).
        modes: some of :data:`~medprobe.mcq.protocol.MODES`, run in this order.
        format: the prompt format (:data:`~medprobe.mcq.prompt.FORMATS`): ``"paper"`` (the
            authors' turns; the CLI default) or ``"medprobe"`` (ours); recorded in
            ``mcq_run.json`` and the summary.
        loglik_norm: ``"sum"`` (default) or ``"mean"``: which log-likelihood decides
            ``loglik``'s answer (both are recorded and summarised); in ``mcq_run.json``.
        max_new_tokens: generation budget per answer.
        seed: sampling and bootstrap seed.
        n_boot: bootstrap replicates of the accuracy CIs.
        on_case: called with each new record after it is written (tests use it to stop).

    Returns:
        The summary dict (as written to ``mcq_summary.json``).

    Raises:
        McqError: bad case file (see :func:`~medprobe.mcq.cases.read_cases`), unknown mode, or
            ``out_dir`` holding results of another model, case file or settings.
    """
    modes = check_modes(modes)
    check_loglik_norm(loglik_norm)
    cases_path = Path(cases_path)
    cases = read_cases(cases_path)
    exemplars, tests = split_exemplars(cases)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    run = {
        "mcq_version": MCQ_VERSION,
        "model": extractor.fingerprint() | {"rendered_prompt": None, "pooling": None},
        "cases_sha256": file_sha256(cases_path),
        "max_new_tokens": int(max_new_tokens),
        "seed": int(seed),
        "sampling": SAMPLING,
        "format": format,
        "loglik_norm": loglik_norm,
    }
    _claim_folder(out, run)
    bos = extractor.processor().tokenizer.bos_token or "<s>"
    prompts = {c.id: render_prompt(exemplars, c, bos, format) for c in tests}
    with open(out / "mcq_prompts.jsonl", "w", encoding="utf-8") as f:
        for c in tests:
            rec = {"id": c.id, "prompt": prompts[c.id], "images": prompt_images(exemplars, c)}
            f.write(json.dumps(rec) + "\n")
    res_path = out / "mcq_results.jsonl"
    records = _resume(res_path)
    done = {(r["mode"], r["id"]) for r in records}
    if done:
        log.info("mcq: resuming, %d records already in %s", len(done), res_path)
    scorer = Scorer(extractor, max_new_tokens=max_new_tokens, seed=seed)
    with open(res_path, "a", encoding="utf-8") as f:
        for mode in modes:
            t0 = time.perf_counter()
            for c in tests:
                if (mode, c.id) in done:
                    continue
                rec = score_case(scorer, mode, exemplars, c, prompts[c.id], loglik_norm)
                f.write(json.dumps(rec) + "\n")
                f.flush()
                os.fsync(f.fileno())
                records.append(rec)
                if on_case is not None:
                    on_case(rec)
            log.info("mcq: %s done in %.1f s", mode, time.perf_counter() - t0)
    test_ids = {c.id for c in tests}
    summary: dict[str, Any] = {
        "cases": str(cases_path),
        "n_cases": len(cases),
        "n_test": len(tests),
        "exemplars": [c.id for c in exemplars],
        "model": extractor.hf_id,
        "format": format,
        "loglik_norm": loglik_norm,
        "modes": {},
    }
    for mode in modes:
        recs = [r for r in records if r["mode"] == mode and r["id"] in test_ids]
        summary["modes"][mode] = summarize(recs, mode, n_boot=n_boot, seed=seed)
    (out / "mcq_summary.json").write_text(json.dumps(summary, indent=2))
    plot_by_difficulty(list(summary["modes"].values()), out / "mcq_by_difficulty.png")
    (out / "mcq_report.md").write_text(report_markdown(summary))
    return summary


# ---------------------------------------------------------------------------------- logging


@dataclass(frozen=True)
class WandbLog:
    """What an MCQ summary logs to W&B (plain data; :func:`log_wandb` sends it).

    Attributes:
        run_id: ``mcq-<16 hex>`` from the case file, model and exemplars (a rerun resumes it).
        name: ``mcq <model folder> <case file name>``.
        config: ``cases``, ``n_cases``, ``exemplars``, ``model``.
        metrics: ``mcq/<mode>/<accuracy|ci_low|ci_high|unparsed_rate|chance>`` (logged and
            written to the run summary), and ``mcq/loglik/accuracy_<sum|mean>`` (both norms).
        table_columns, table_rows: the by-difficulty rows of every mode
            (``mcq/by_difficulty``).
        figure: the by-difficulty PNG (``mcq/by_difficulty_fig``), or None when absent.
    """

    run_id: str
    name: str
    config: dict[str, Any]
    metrics: dict[str, Any]
    table_columns: list[str]
    table_rows: list[list[Any]]
    figure: Path | None


def wandb_log(summary: dict[str, Any], out_dir: Path) -> WandbLog:
    """An MCQ summary (:func:`evaluate`) -> :class:`WandbLog`."""
    key = json.dumps({k: summary[k] for k in ("cases", "model", "exemplars")}, sort_keys=True)
    metrics: dict[str, Any] = {}
    rows = []
    for mode, s in summary["modes"].items():
        for k in ("accuracy", "ci_low", "ci_high", "unparsed_rate", "chance"):
            metrics[f"mcq/{mode}/{k}"] = s[k]
        for norm, a in s.get("by_loglik_norm", {}).items():
            metrics[f"mcq/{mode}/accuracy_{norm}"] = a["accuracy"]
        for r in s["by_difficulty"]:
            rows.append([mode, r["label"], r["n"], r["accuracy"], r["ci_low"], r["ci_high"]])
    png = out_dir / "mcq_by_difficulty.png"
    return WandbLog(
        run_id="mcq-" + hashlib.sha256(key.encode()).hexdigest()[:16],
        name=f"mcq {Path(summary['model']).name} {Path(summary['cases']).name}",
        config={k: summary[k] for k in ("cases", "n_cases", "exemplars", "model")},
        metrics=metrics,
        table_columns=["mode", "readers_correct", "n", "accuracy", "ci_low", "ci_high"],
        table_rows=rows,
        figure=png if png.is_file() else None,
    )


def log_wandb(
    summary: dict[str, Any], out_dir: Path, project: str = "medprobe", tracker: str = "wandb"
) -> dict[str, Any] | None:
    """Log a summary to W&B through medprobe's one sink (:func:`medprobe.tracking.tracker_sink`;
    mode ``auto`` or ``$WANDB_MODE``: online with an API key, else offline, sync later).

    One run (resumed by id) with :func:`wandb_log`'s metrics, table and figure.

    Returns:
        ``{"id": run id, "dir": the run's local folder}``; None with ``tracker="none"`` (the
        no-op sink).

    Raises:
        medprobe.errors.McqError: ``$WANDB_MODE`` is not a W&B mode.
    """
    from medprobe import tracking
    from medprobe.config import TrackerConfig, TrackerMode, TrackerName

    spec = wandb_log(summary, out_dir)
    env_mode = os.environ.get("WANDB_MODE", "auto")
    try:
        mode = TrackerMode(env_mode)
    except ValueError:
        raise McqError(
            f"WANDB_MODE={env_mode!r} is not one of {', '.join(m.value for m in TrackerMode)}"
        ) from None
    settings = TrackerConfig(name=TrackerName(tracker), mode=mode, project=project)
    identity = tracking.RunIdentity(spec.run_id, spec.name)
    with tracking.tracker_sink(settings, identity, out_dir, config=spec.config) as sink:
        sink.log_summary(spec.metrics)
        sink.log_table("mcq/by_difficulty", spec.table_columns, spec.table_rows)
        if spec.figure is not None:
            sink.log_image("mcq/by_difficulty_fig", Path(spec.figure))
    if sink.info is None:
        return None
    return {"id": spec.run_id, "dir": sink.info.dir}
