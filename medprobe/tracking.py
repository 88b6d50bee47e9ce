"""The Weights & Biases sink: consumes finished results; never part of the computation.

One context manager, :func:`tracker_sink`, opens a W&B run (init, offline or online, finish
always called) or, for ``tracker=none`` / ``tracker.mode=disabled``, a no-op :class:`Sink`
whose methods do nothing; callers never branch on the tracker. Every user goes through it:

- a single job (:func:`log_run`): project/entity/group/tags from ``tracker``, the resolved
  config, summary metrics with SD and CI bounds under stable names (identical across tasks,
  so dashboard panels can compare runs), a per-class table and a ROC chart;
- a ``layer=all`` job (:func:`log_layer_curve`): the curve as a table and a line chart;
- the multiple-choice evaluation (``medprobe.mcq``): summary keys, a table, a figure.

Mode ``auto`` is online when an API key is configured (``WANDB_API_KEY`` or a netrc entry),
otherwise offline (sync later with ``wandb sync``). Run names, ids, groups and tags key on the
identities ``results.task``/``results.model`` (never the extractor kind, so CLIP and PLIP are
two runs); the id is a hash of what defines the job, so a rerun or a later sync updates the
same run instead of creating a duplicate. Results are read only through
:mod:`medprobe.results`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import netrc
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from medprobe.results import LayerCurve, Results, TrackerInfo, read_predictions

__all__ = [
    "NAME_EXCLUDED",
    "SUMMARY_FIELDS",
    "RunIdentity",
    "Sink",
    "TrackerSettings",
    "layer_curve_config",
    "layer_curve_identity",
    "layer_curve_summary",
    "log_layer_curve",
    "log_run",
    "resolve_mode",
    "run_identity",
    "summary_metrics",
    "tracker_sink",
]

log = logging.getLogger("medprobe")

SUMMARY_FIELDS = ("value", "sd", "ci_low", "ci_high")
#: seconds an online ``wandb.init`` may take before medprobe keeps the run offline instead
#: (W&B's own default waits 90 s on a wrong key or no network)
INIT_TIMEOUT_S = 20.0
#: Overrides that do not change what a job computes; left out of W&B run names.
NAME_EXCLUDED = ("output_dir", "cache_dir", "data_root", "progress", "tracker", "hydra")


class TrackerSettings(Protocol):
    """What the sink reads from the ``tracker`` config node (:class:`medprobe.config.
    TrackerConfig`): ``name`` (``wandb`` | ``none``), ``mode`` (auto | online | offline |
    disabled; an Enum or its value), W&B ``project``/``entity``, a fixed ``group`` (else the
    Hydra sweep folder's name), a run-name ``name_prefix``, extra ``tags``, and ``dir`` for W&B
    files (else the job's output folder)."""

    @property
    def name(self) -> str: ...
    @property
    def mode(self) -> Any: ...
    @property
    def project(self) -> str: ...
    @property
    def entity(self) -> str | None: ...
    @property
    def group(self) -> str | None: ...
    @property
    def name_prefix(self) -> str: ...
    @property
    def tags(self) -> Sequence[str]: ...
    @property
    def dir(self) -> str | None: ...


@dataclass(frozen=True)
class RunIdentity:
    """How a W&B run is named: ``id`` (16+ hex digits, deterministic), ``name``, ``group``
    (None: none), ``tags``."""

    id: str
    name: str
    group: str | None = None
    tags: list[str] = field(default_factory=list)


def _has_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        rc = netrc.netrc()
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
    return any("wandb" in host for host in rc.hosts)


def _mode_value(mode: Any) -> str:
    return str(mode.value) if isinstance(mode, Enum) else str(mode)


def resolve_mode(mode: Any) -> str:
    """``auto`` -> ``online`` with an API key, else ``offline``; other modes unchanged."""
    mode = _mode_value(mode)
    if mode == "auto":
        return "online" if _has_api_key() else "offline"
    return mode


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_identity(
    tracker: TrackerSettings, results: Results, sweep_group: str | None = None
) -> RunIdentity:
    """Name, id, group and tags of a single job's W&B run.

    Name: ``<name_prefix><task>-<model>[-<overrides>]`` (the identities, then the job's
    command-line overrides except those in :data:`NAME_EXCLUDED`, sorted). The id hashes the
    project, group, name, extractor fingerprint, task, images (cache key), layer, fraction,
    seed, probe config and bootstrap: the same job gets the same id, two models (even over
    one extractor kind) get two. The group is ``tracker.group``, else ``sweep_group`` (the
    sweep folder's name); only an explicit ``tracker.group`` enters the id, so rerunning the
    same ``--multirun`` (a new sweep folder) updates its runs instead of creating new ones.
    """
    kept = sorted(
        o.lstrip("+~")
        for o in results.overrides
        if not o.lstrip("+~").split("=")[0].startswith(NAME_EXCLUDED)
    )
    base = f"{results.task}-{results.model}"
    name = tracker.name_prefix + (f"{base}-{','.join(kept)}" if kept else base)
    group = tracker.group or sweep_group
    tags = [
        f"model={results.model}",
        f"task={results.task}",
        f"layer={results.layer}",
        f"fraction={results.train_fraction}",
        f"seed={results.seed}",
        *[str(t) for t in tracker.tags],
    ]
    ident = {
        "project": tracker.project,
        "group": tracker.group,
        "name": name,
        "extractor": results.extractor,
        "task": results.task,
        "images": results.cache.cache_key,
        "layer": str(results.layer),
        "train_fraction": results.train_fraction,
        "seed": results.seed,
        "probe": results.config.get("probe"),
        "bootstrap": {
            "n": results.bootstrap.n,
            "ci": results.bootstrap.ci,
            "seeded_by": results.bootstrap.seeded_by,
        },
    }
    return RunIdentity(_digest(ident), name, group, tags)


def layer_curve_identity(
    tracker: TrackerSettings, curve: LayerCurve, sweep_group: str | None = None
) -> RunIdentity:
    """Name (``<name_prefix><task>-<model>-layer=all``), id (hash of task, model, layers,
    seed, fraction, metric, project, explicit group), group (``tracker.group``, else
    ``sweep_group``) and tags of a ``layer=all`` job's run."""
    group = tracker.group or sweep_group
    name = f"{tracker.name_prefix}{curve.task}-{curve.model}-layer=all"
    ident = {
        "project": tracker.project, "group": tracker.group, "name": name,
        "layers": [str(p.layer) for p in curve.layers], "seed": curve.seed,
        "train_fraction": curve.train_fraction, "metric": curve.metric,
    }  # fmt: skip
    tags = [f"model={curve.model}", f"task={curve.task}", "layer=all", *map(str, tracker.tags)]
    return RunIdentity(_digest(ident), name, group, tags)


# ----------------------------------------------------------------------------- the sink


class Sink:
    """Where results are logged. This base class is the no-op sink (``tracker=none``):
    every method does nothing and ``info`` is None. :func:`tracker_sink` gives a W&B one.

    Attributes:
        enabled: False for the no-op sink (lets a caller skip work only a real sink needs).
        info: where the run lives (id, name, group, mode, dir); None for the no-op sink.
    """

    enabled: bool = False
    info: TrackerInfo | None = None

    def log_summary(self, values: Mapping[str, Any]) -> None:
        """Log scalar (or string) ``values`` once and keep them as the run's summary."""

    def log_table(self, key: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Log a table under ``key`` (``rows`` of ``len(columns)`` values)."""

    def log_line(
        self,
        key: str,
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
        *,
        x: str,
        y: str,
        stroke: str | None = None,
        title: str = "",
    ) -> None:
        """Log a line chart of the table ``rows`` under ``key``: ``y`` against ``x``, one
        line per value of the ``stroke`` column (None: one line)."""

    def log_image(self, key: str, path: Path) -> None:
        """Log the image file ``path`` (PNG, JPEG) under ``key``."""


class _WandbSink(Sink):
    enabled = True

    def __init__(self, run: Any, info: TrackerInfo) -> None:
        import wandb

        self._wandb = wandb
        self._run = run
        self.info = info

    def log_summary(self, values: Mapping[str, Any]) -> None:
        self._run.log(dict(values))
        for k, v in values.items():
            self._run.summary[k] = v

    def log_table(self, key: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        table = self._wandb.Table(columns=list(columns), data=[list(r) for r in rows])
        self._run.log({key: table})

    def log_line(
        self,
        key: str,
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
        *,
        x: str,
        y: str,
        stroke: str | None = None,
        title: str = "",
    ) -> None:
        table = self._wandb.Table(columns=list(columns), data=[list(r) for r in rows])
        chart = self._wandb.plot.line(table, x, y, stroke=stroke, title=title or key)
        self._run.log({key: chart})

    def log_image(self, key: str, path: Path) -> None:
        self._run.log({key: self._wandb.Image(str(path))})


@contextmanager
def tracker_sink(
    tracker: TrackerSettings,
    identity: RunIdentity,
    out_dir: Path,
    *,
    config: Mapping[str, Any] | None = None,
) -> Iterator[Sink]:
    """One W&B run for the ``with`` block; ``finish()`` always runs.

    Args:
        tracker: the ``tracker`` config (:class:`TrackerSettings`). ``name: none`` or
            ``mode: disabled`` gives the no-op :class:`Sink` (nothing imported or written).
        identity: the run's id, name, group and tags (:func:`run_identity`,
            :func:`layer_curve_identity`, or the caller's own).
        out_dir: W&B files go to ``<tracker.dir or out_dir>/wandb``.
        config: logged as the run's config (the resolved job config).

    Yields:
        the sink; its ``info`` says where the run lives (mode ``auto`` resolved).

    Raises:
        whatever ``wandb.init`` raises (no network, bad key, W&B not installed); callers that
        must not fail on the tracker catch it (:func:`log_run` does).
    """
    mode = resolve_mode(tracker.mode)
    if str(tracker.name) == "none" or mode == "disabled":
        yield Sink()
        return
    import wandb

    wdir = Path(tracker.dir).expanduser() if tracker.dir else Path(out_dir)
    wdir.mkdir(parents=True, exist_ok=True)
    kwargs: dict[str, Any] = dict(
        project=tracker.project,
        entity=tracker.entity,
        group=identity.group,
        name=identity.name,
        tags=list(identity.tags),
        id=identity.id,
        dir=str(wdir),
        resume="allow",
        reinit="finish_previous",
        config=dict(config) if config is not None else None,
    )
    note = None
    try:
        run = wandb.init(
            mode=mode,  # type: ignore[arg-type]
            settings=wandb.Settings(console="off", silent=True, init_timeout=INIT_TIMEOUT_S),
            **kwargs,
        )
    except Exception as e:
        if mode != "online":
            raise
        # a wrong key or no network: fail fast, keep the run offline in the job folder
        first = (str(e).strip().splitlines() or [""])[0][:200]
        note = (
            f"W&B online failed ({type(e).__name__}: {first}); the run is kept offline in "
            f"{wdir / 'wandb'}: upload it later with `wandb sync {wdir / 'wandb'}/offline-run-*`"
        )
        log.warning(note)
        mode = "offline"
        run = wandb.init(mode="offline", settings=wandb.Settings(console="off", silent=True),
                         **kwargs)  # fmt: skip
    try:
        info = TrackerInfo(id=identity.id, name=identity.name, group=identity.group, mode=mode,
                           dir=run.dir, note=note)  # fmt: skip
        yield _WandbSink(run, info)
    finally:
        run.finish()


# ----------------------------------------------------------------------------- what is logged


def summary_metrics(results: Results) -> dict[str, float]:
    """Flat W&B summary: ``test/<metric>`` plus ``_sd``, ``_ci_low``, ``_ci_high`` suffixes,
    ``probe/C``, ``probe/val_score``, ``counts/test``, ``counts/fit``."""
    out: dict[str, float] = {}
    for key, v in results.metrics.items():
        for f in SUMMARY_FIELDS:
            out[f"test/{key}" if f == "value" else f"test/{key}_{f}"] = getattr(v, f)
    out["probe/C"] = results.probe.C
    out["probe/val_score"] = results.probe.val_score
    out["counts/test"] = results.counts.test
    out["counts/fit"] = results.counts.fit
    return out


def _per_class_rows(results: Results) -> list[list[Any]]:
    """``[class, auroc, sd, ci_low, ci_high, n_test]`` for each class with an AUROC."""
    per = results.metrics.per_class()
    n_test = results.counts.per_split.get("test", {})
    return [
        [c, v.value, v.sd, v.ci_low, v.ci_high, n_test.get(c, 0)]
        for c in results.classes
        if (v := per.get(c)) is not None
    ]


def _roc_rows(results: Results, run_dir: Path) -> list[list[Any]]:
    """One-vs-rest ROC curves of the test predictions as rows ``[class, fpr, tpr]`` (from
    ``sklearn.metrics.roc_curve``, at most 200 evenly spaced points per class, first and last
    kept; no pandas needed, unlike ``wandb.plot.roc_curve``)."""
    from sklearn.metrics import roc_curve

    p = read_predictions(run_dir, results.classes, results.multilabel,
                         results.predictions_sha256)  # fmt: skip
    y_bin = p.y if p.multilabel else np.eye(len(p.classes), dtype=bool)[p.y]
    data = []
    for j, c in enumerate(p.classes):
        if y_bin[:, j].all() or not y_bin[:, j].any():
            continue  # no ROC curve without positives and negatives
        fpr, tpr, _ = roc_curve(y_bin[:, j], p.proba[:, j])
        keep = np.unique(np.linspace(0, len(fpr) - 1, min(len(fpr), 200)).round().astype(int))
        data += [[c, float(fpr[k]), float(tpr[k])] for k in keep]
    return data


def _failed(e: Exception) -> TrackerInfo:
    log.warning("W&B logging failed (%s: %s); results are on disk", type(e).__name__, e)
    return TrackerInfo(error=f"{type(e).__name__}: {e}")


def log_run(
    tracker: TrackerSettings, results: Results, out_dir: Path, sweep_group: str | None = None
) -> TrackerInfo | None:
    """Log one job's results: summary (:func:`summary_metrics`), ``test/per_class`` table
    (class, auroc, sd, ci_low, ci_high, n_test), ``test/roc`` chart (from
    ``<out_dir>/predictions.csv`` when present; a failure there only warns).

    Returns:
        where the run lives; None for ``tracker=none``; ``TrackerInfo(error=...)`` when
        W&B failed (a tracker problem never loses the results on disk, so it never raises).
    """
    try:
        with tracker_sink(tracker, run_identity(tracker, results, sweep_group), out_dir,
                          config=results.config) as sink:  # fmt: skip
            sink.log_summary(summary_metrics(results))
            sink.log_table("test/per_class", ["class", "auroc", "sd", "ci_low", "ci_high",
                                              "n_test"], _per_class_rows(results))  # fmt: skip
            if sink.enabled and (Path(out_dir) / "predictions.csv").is_file():
                try:
                    sink.log_line("test/roc", ["class", "fpr", "tpr"], _roc_rows(results, out_dir),
                                  x="fpr", y="tpr", stroke="class",
                                  title="test ROC (one-vs-rest)")  # fmt: skip
                except Exception as e:  # the chart is optional; the summary and table are logged
                    warnings.warn(f"W&B ROC chart not logged ({type(e).__name__}: {e})",
                                  stacklevel=1)  # fmt: skip
        return sink.info
    except Exception as e:
        return _failed(e)


def layer_curve_config(curve: LayerCurve) -> dict[str, Any]:
    """The W&B config of a ``layer=all`` job's run: the keys dashboards group and filter by,
    as a single job's run has them (``model.name``/``kind``, ``task.name``/``kind``/``metric``,
    ``layer`` = ``"all"``, ``train_fraction``, ``seed``)."""
    return {
        "model": {"name": curve.model, "kind": curve.model_kind},
        "task": {"name": curve.task, "kind": curve.task_kind, "metric": curve.metric},
        "layer": "all",
        "train_fraction": curve.train_fraction,
        "seed": curve.seed,
    }


def layer_curve_summary(curve: LayerCurve) -> dict[str, Any]:
    """The W&B summary of a ``layer=all`` job's run: ``layers/best_layer_by_validation`` and,
    for that layer (chosen on validation, never on test), the same keys a single job logs for
    the curve's metric: ``test/<metric>`` with ``_sd``, ``_ci_low``, ``_ci_high``, and
    ``probe/val_score``."""
    best = str(curve.best_layer_by_validation)
    out: dict[str, Any] = {"layers/best_layer_by_validation": best}
    for p in curve.layers:
        if str(p.layer) == best:
            for f in SUMMARY_FIELDS:
                key = f"test/{curve.metric}" if f == "value" else f"test/{curve.metric}_{f}"
                out[key] = getattr(p, f)
            out["probe/val_score"] = p.val_score
            break
    return out


def log_layer_curve(
    tracker: TrackerSettings, curve: LayerCurve, out_dir: Path, sweep_group: str | None = None
) -> TrackerInfo | None:
    """Log a ``layer=all`` job's curve as one W&B run: table ``layers/<metric>`` (layer,
    value, sd, ci_low, ci_high, val_score), its line chart ``layers/<metric>_chart``, config
    :func:`layer_curve_config` and summary :func:`layer_curve_summary`.

    Returns:
        as :func:`log_run`.
    """
    cols = ["layer", "value", "sd", "ci_low", "ci_high", "val_score"]
    rows = [[str(p.layer), p.value, p.sd, p.ci_low, p.ci_high, p.val_score] for p in curve.layers]
    key = f"layers/{curve.metric}"
    try:
        with tracker_sink(tracker, layer_curve_identity(tracker, curve, sweep_group), out_dir,
                          config=layer_curve_config(curve)) as sink:  # fmt: skip
            sink.log_table(key, cols, rows)
            sink.log_line(f"{key}_chart", cols, rows, x="layer", y="value",
                          title=f"{key} by layer")  # fmt: skip
            sink.log_summary(layer_curve_summary(curve))
        return sink.info
    except Exception as e:
        return _failed(e)
