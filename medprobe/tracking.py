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
from pathlib import Path
from typing import Any

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
        run.log(summary)
        for k, v in summary.items():
            run.summary[k] = v
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
        info = {"id": run_id, "name": name, "group": group, "mode": mode, "dir": run.dir}
    finally:
        run.finish()
    return info
