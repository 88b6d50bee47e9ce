"""Weights & Biases sink: consumes finished results; never part of the computation.

One W&B run per job (also under ``--multirun``): project/entity/group/tags from ``tracker``,
the resolved config, summary metrics with SD and CI bounds under stable names (identical across
tasks, so dashboard panels can compare runs), and a per-class table. Mode ``auto`` is online
when an API key is configured (``WANDB_API_KEY`` or a netrc entry), otherwise offline (sync later
with ``wandb sync``). The run id is derived from the job's settings, so a rerun or a later sync
updates the same run instead of creating a duplicate. ``finish()`` is always called.
"""

from __future__ import annotations

import hashlib
import json
import netrc
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

SUMMARY_FIELDS = ("value", "sd", "ci_low", "ci_high")
#: Overrides that do not change what a job computes; left out of W&B run names.
NAME_EXCLUDED = ("output_dir", "cache_dir", "data_root", "progress", "tracker", "hydra")


def _has_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        rc = netrc.netrc()
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
    return any("wandb" in host for host in rc.hosts)


def resolve_mode(mode: str) -> str:
    """``auto`` -> ``online`` with an API key, else ``offline``; other modes unchanged."""
    if mode == "auto":
        return "online" if _has_api_key() else "offline"
    return mode


def run_identity(
    cfg: DictConfig, results: dict[str, Any]
) -> tuple[str, str, str | None, list[str]]:
    """(run id, run name, group, tags) for a job; the id is a hash of what defines the job."""
    from hydra.core.hydra_config import HydraConfig

    override_name, sweep_group = "", None
    try:
        hc = HydraConfig.get()
        kept = [
            o.lstrip("+~")
            for o in hc.overrides.task
            if not o.lstrip("+~").split("=")[0].startswith(NAME_EXCLUDED)
        ]
        override_name = ",".join(sorted(kept))
        if hc.mode is not None and hc.mode.name == "MULTIRUN":
            sweep_group = Path(hc.sweep.dir).name
    except Exception:  # not inside a Hydra app
        pass
    base = f"{results['task']}-{results['model']}"
    name = cfg.tracker.name_prefix + (f"{base}-{override_name}" if override_name else base)
    group = cfg.tracker.group or sweep_group
    tags = [
        f"model={results['model']}",
        f"task={results['task']}",
        f"layer={results['layer']}",
        f"fraction={results['train_fraction']}",
        f"seed={results['seed']}",
        *[str(t) for t in cfg.tracker.tags],
    ]
    ident = {
        "project": cfg.tracker.project,
        "group": group,
        "name": name,
        "extractor": results["extractor"],
        "task": results["task"],
        "images": results["cache"]["cache_key"],
        "layer": str(results["layer"]),
        "train_fraction": results["train_fraction"],
        "seed": results["seed"],
        "probe": results["config"]["probe"],
        "bootstrap": results["bootstrap"],
    }
    run_id = hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[
        :16
    ]
    return run_id, name, group, tags


def summary_metrics(results: dict[str, Any]) -> dict[str, float]:
    """Flat W&B summary: ``test/<metric>`` plus ``_sd``, ``_ci_low``, ``_ci_high`` suffixes."""
    out: dict[str, float] = {}
    for key, v in results["metrics"].items():
        if not isinstance(v, dict):
            continue
        for f in SUMMARY_FIELDS:
            out[f"test/{key}" if f == "value" else f"test/{key}_{f}"] = v[f]
    out["probe/C"] = results["probe"]["C"]
    out["probe/val_score"] = results["probe"]["val_score"]
    out["counts/test"] = results["counts"]["test"]
    out["counts/fit"] = results["counts"]["fit"]
    return out


def log_run(cfg: DictConfig, results: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """Log one job's results to W&B; return {id, name, group, mode, dir}.

    W&B files go under ``tracker.dir`` or the job's output dir (``<dir>/wandb``).
    """
    import wandb

    mode = resolve_mode(str(getattr(cfg.tracker.mode, "value", cfg.tracker.mode)))
    run_id, name, group, tags = run_identity(cfg, results)
    wdir = Path(cfg.tracker.dir).expanduser() if cfg.tracker.dir else out_dir
    wdir.mkdir(parents=True, exist_ok=True)
    run = wandb.init(
        project=cfg.tracker.project,
        entity=cfg.tracker.entity,
        group=group,
        name=name,
        tags=tags,
        id=run_id,
        dir=str(wdir),
        mode=mode,
        resume="allow",
        reinit="finish_previous",
        config=results["config"],
        settings=wandb.Settings(console="off", silent=True),
    )
    try:
        summary = summary_metrics(results)
        run.log(summary)  # also the run's summary (last logged value of each key)
        rows = []
        met = results["metrics"]
        per_split = results["counts"]["per_split"].get("test", {})
        for c in results["classes"]:
            v = met.get(f"auroc/{c}")
            if v is not None:
                rows.append(
                    [c, v["value"], v["sd"], v["ci_low"], v["ci_high"], per_split.get(c, 0)]
                )
        run.log(
            {
                "test/per_class": wandb.Table(
                    columns=["class", "auroc", "sd", "ci_low", "ci_high", "n_test"], data=rows
                )
            }
        )
        try:
            roc = _roc_chart(out_dir, results)
            if roc is not None:
                run.log({"test/roc": roc})
        except Exception as e:  # the chart is optional; the summary and table are logged
            warnings.warn(f"W&B ROC chart not logged ({type(e).__name__}: {e})", stacklevel=1)
        info = {"id": run_id, "name": name, "group": group, "mode": mode, "dir": run.dir}
    finally:
        run.finish()
    return info


def _roc_chart(out_dir: Path, results: dict[str, Any]) -> Any:
    """One-vs-rest ROC curves of the test predictions as a W&B line chart (no pandas needed,
    unlike ``wandb.plot.roc_curve``): a table (class, fpr, tpr) from
    ``sklearn.metrics.roc_curve``, at most 200 evenly spaced points per class (first and last
    kept). None without ``predictions.csv``."""
    import wandb
    from sklearn.metrics import roc_curve

    if not (out_dir / "predictions.csv").is_file():
        return None
    from medprobe.compare import load_run

    r = load_run(out_dir)
    y_bin = r.y if r.multilabel else np.eye(len(r.classes), dtype=bool)[r.y]
    data = []
    for j, c in enumerate(r.classes):
        if y_bin[:, j].all() or not y_bin[:, j].any():
            continue  # no ROC curve without positives and negatives
        fpr, tpr, _ = roc_curve(y_bin[:, j], r.proba[:, j])
        keep = np.unique(np.linspace(0, len(fpr) - 1, min(len(fpr), 200)).round().astype(int))
        data += [[c, float(fpr[k]), float(tpr[k])] for k in keep]
    table = wandb.Table(columns=["class", "fpr", "tpr"], data=data)
    return wandb.plot.line(table, "fpr", "tpr", stroke="class", title="test ROC (one-vs-rest)")


def log_layer_curve(cfg: DictConfig, curve: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """Log a ``layer=all`` job's curve (:func:`medprobe.runner.run_all_layers`) as one W&B run.

    A table ``layers/<metric>`` (layer, value, sd, ci_low, ci_high, val_score), a line chart
    of it, and summary ``layers/best_layer_by_validation``. The run id is a hash of the task,
    model, layers, seed, fraction and group, so a rerun updates the same run.

    Returns:
        {id, name, group, mode, dir}.
    """
    import wandb

    mode = resolve_mode(str(getattr(cfg.tracker.mode, "value", cfg.tracker.mode)))
    group = cfg.tracker.group
    name = f"{cfg.tracker.name_prefix}{curve['task']}-{curve['model']}-layer=all"
    ident = {
        "project": cfg.tracker.project, "group": group, "name": name,
        "layers": [str(r["layer"]) for r in curve["layers"]], "seed": int(cfg.seed),
        "train_fraction": float(cfg.train_fraction), "metric": curve["metric"],
    }  # fmt: skip
    run_id = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
    wdir = Path(cfg.tracker.dir).expanduser() if cfg.tracker.dir else out_dir
    wdir.mkdir(parents=True, exist_ok=True)
    run = wandb.init(
        project=cfg.tracker.project, entity=cfg.tracker.entity, group=group, name=name,
        tags=[f"model={curve['model']}", f"task={curve['task']}", "layer=all",
              *[str(t) for t in cfg.tracker.tags]],
        id=run_id, dir=str(wdir), mode=mode, resume="allow", reinit="finish_previous",
        settings=wandb.Settings(console="off", silent=True),
    )  # fmt: skip
    try:
        cols = ["layer", "value", "sd", "ci_low", "ci_high", "val_score"]
        rows = [[str(r["layer"]), *[r[c] for c in cols[1:]]] for r in curve["layers"]]
        table = wandb.Table(columns=cols, data=rows)
        key = f"layers/{curve['metric']}"
        run.log({key: table, f"{key}_chart": wandb.plot.line(table, "layer", "value",
                                                             title=f"{key} by layer")})  # fmt: skip
        run.summary["layers/best_layer_by_validation"] = str(curve["best_layer_by_validation"])
        info = {"id": run_id, "name": name, "group": group, "mode": mode, "dir": run.dir}
    finally:
        run.finish()
    return info
