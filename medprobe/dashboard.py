"""``medprobe dashboard``: a W&B workspace and report of a project's runs, built as code.

Built with W&B's ``wandb-workspaces`` library from the keys every medprobe run logs
(:mod:`medprobe.tracking`): summary ``test/<metric>`` with ``_ci_low``/``_ci_high``,
``test/auroc/<class>``, ``mcq/<mode>/accuracy``, tables ``layers/<metric>`` and
``mcq/by_difficulty``; config ``model.name`` (the model's identity: runs are grouped by it,
never by the extractor kind ``model.kind``), ``task.name``, ``layer``, ``train_fraction``,
``seed``.

The workspace is the project's run explorer: runs grouped by model, task, layer and training
fraction (mean over seeds), one section per comparison. The report reads like the paper: per
task the primary metric by model (Fig. 3-5), per-class AUROC, per model the layer sweep (Fig.
S5) and the data-fraction sweep (Fig. 6) with the share of the full-data score kept at 10%,
the MCQ accuracy by difficulty (Fig. 1d) and the runs table.

Error bars: W&B's bar chart has no per-run error bars; its only band is the spread over the
runs of a group. The 95% bootstrap CI is therefore drawn as three bars side by side, CI low |
value | CI high (``test/<m>_ci_low``, ``test/<m>``, ``test/<m>_ci_high``), each the mean
over the group's runs (seeds) with the min-max over them as the band. ``medprobe report``
draws the same comparisons offline with true error bars.

Without network or an API key, ``medprobe dashboard`` says so in one line and writes the
specification (``dashboard_spec.json``) into the output folder; ``medprobe dashboard
--from-spec <file>`` saves it later.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medprobe.cli.common import ArgumentParser
from medprobe.errors import ConfigError

__all__ = [
    "MCQ_MODES",
    "TaskPanels",
    "build_report",
    "build_workspace",
    "main",
    "referenced_keys",
    "retained_share",
    "spec",
    "tasks_from_runs",
]

#: config keys (dotted paths into the logged config)
MODEL = "model.name"
TASK = "task.name"
LAYER = "layer"
FRACTION = "train_fraction"
#: the runs table's grouping: model identity, task, layer, fraction (seeds are averaged)
TABLE_GROUPS = (MODEL, TASK, LAYER, FRACTION)
#: primary metrics a task may have (:class:`medprobe.config.TaskMetric`)
DEFAULT_METRICS = ("auroc_macro", "f1_macro", "accuracy")
#: MCQ modes (:data:`medprobe.mcq.protocol.MODES`)
MCQ_MODES = ("greedy", "sample", "loglik")
#: the training fraction whose share of the full-data score Fig. 6 reports
RETAINED_AT = 0.1
SPEC_FILE = "dashboard_spec.json"
ERROR_BARS_NOTE = (
    "Bars: 95% bootstrap CI low | value | CI high of each group (W&B bar charts have no "
    "per-run error bars); each bar is the mean over the group's runs (seeds), its band the "
    "min-max over them. `medprobe report` draws true error bars offline."
)


@dataclass(frozen=True)
class TaskPanels:
    """What the panels of one task need.

    Attributes:
        name: the task identity (``config.task.name``).
        metric: its primary metric (``config.task.metric``).
        classes: class names with a per-class AUROC (``test/auroc/<class>``); the per-class
            panel is drawn for more than two.
        models: model identities seen (``config.model.name``), in order; one sweep grid each.
        retained: model -> share of the full-data score kept at 10% of the training data
            (:func:`retained_share`), where both fractions were run.
    """

    name: str
    metric: str = "auroc_macro"
    classes: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    retained: dict[str, float] = field(default_factory=dict)


def _get(config: Mapping[str, Any], dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
        if isinstance(node, Mapping) and set(node) == {"value"}:  # W&B API config form
            node = node["value"]
    return node


def retained_share(
    runs: Iterable[tuple[Mapping[str, Any], Mapping[str, Any]]],
    task: str,
    model: str,
    metric: str,
    at: float = RETAINED_AT,
) -> float | None:
    """Share of the full-data score kept at training fraction ``at`` (Fig. 6).

    Args:
        runs: ``(config, summary)`` per run.
        task, model: identities (``config.task.name``, ``config.model.name``).
        metric: the summary metric ``test/<metric>``.
        at: the reduced fraction.

    Returns:
        mean over runs (seeds, layers) of ``test/<metric>`` at fraction ``at`` divided by its
        mean at fraction 1.0; None when either fraction has no run.
    """
    by_fraction: dict[float, list[float]] = defaultdict(list)
    for config, summary in runs:
        value = summary.get(f"test/{metric}")
        if _get(config, TASK) != task or _get(config, MODEL) != model or value is None:
            continue
        frac = _get(config, FRACTION)
        if frac is not None:
            by_fraction[round(float(frac), 6)].append(float(value))
    low, full = by_fraction.get(round(at, 6)), by_fraction.get(1.0)
    if not low or not full or sum(full) == 0:
        return None
    return (sum(low) / len(low)) / (sum(full) / len(full))


def tasks_from_runs(
    runs: Iterable[tuple[Mapping[str, Any], Mapping[str, Any]]],
) -> list[TaskPanels]:
    """The tasks of a set of runs (``(config, summary)`` each: a W&B run's ``config`` and
    ``summary``, or a results.json's config and :func:`medprobe.tracking.summary_metrics`),
    in order of first appearance. Runs without ``config.task.name`` (MCQ runs) are skipped."""
    runs = list(runs)
    order: dict[str, dict[str, Any]] = {}
    for config, summary in runs:
        task = _get(config, TASK)
        if task is None:
            continue
        t = order.setdefault(str(task), {"metric": None, "classes": {}, "models": {}})
        t["metric"] = t["metric"] or _get(config, "task.metric")
        for k in summary:
            if k.startswith("test/auroc/") and not k.endswith(("_sd", "_ci_low", "_ci_high")):
                t["classes"][k.split("/", 2)[2]] = None
        if (model := _get(config, MODEL)) is not None:
            t["models"][str(model)] = None
    out = []
    for name, t in order.items():
        metric = str(t["metric"] or "auroc_macro")
        models = tuple(t["models"])
        retained = {
            m: s for m in models if (s := retained_share(runs, name, m, metric)) is not None
        }
        out.append(TaskPanels(name, metric, tuple(t["classes"]), models, retained))
    return out


# ----------------------------------------------------------------------------- panels


def _ci_keys(metric: str) -> list[str]:
    return [f"test/{metric}_ci_low", f"test/{metric}", f"test/{metric}_ci_high"]


def _ci_bars(title: str, keys: Sequence[str], groupby: str | None = None) -> Any:
    import wandb_workspaces.reports.v2 as wr

    return wr.BarPlot(
        title=title,
        metrics=list(keys),
        orientation="v",
        groupby=wr.Config(groupby) if groupby else None,
        groupby_aggfunc="mean",
        groupby_rangefunc="minmax",
        title_y=keys[len(keys) // 2] if len(keys) == 3 else None,
    )


def _primary_panel(metric: str, task: str | None = None) -> Any:
    where = f"{task}: " if task else ""
    return _ci_bars(
        f"{where}test/{metric} by model, 95% CI (low | value | high)",
        _ci_keys(metric),
        MODEL if task else None,
    )


def _per_class_panel(task: TaskPanels) -> Any:
    import wandb_workspaces.reports.v2 as wr

    return wr.BarPlot(
        title=f"{task.name}: per-class AUROC by model",
        metrics=[f"test/auroc/{c}" for c in task.classes],
        orientation="v",
        groupby=wr.Config(MODEL),
        groupby_aggfunc="mean",
        groupby_rangefunc="minmax",
    )


def _sweep_panels(metric: str, key: str, what: str, prefix: str = "") -> list[Any]:
    """Scatter of ``test/<metric>`` against config ``key`` (one point per run) and bars by
    ``key`` of CI low | value | high (mean over seeds, min-max band)."""
    import wandb_workspaces.reports.v2 as wr

    return [
        wr.ScatterPlot(
            title=f"{prefix}test/{metric} by {what} (each run)",
            x=wr.Config(key),
            y=wr.SummaryMetric(f"test/{metric}"),
        ),
        _ci_bars(
            f"{prefix}test/{metric} by {what}, mean over seeds, 95% CI (low | value | high)",
            _ci_keys(metric),
            key,
        ),
    ]


def _layer_curve_panel(metric: str, prefix: str = "") -> Any:
    """The ``layers/<metric>`` table of ``layer=all`` runs as W&B's built-in line chart."""
    import wandb_workspaces.reports.v2 as wr

    chart = wr.CustomChart.from_table(
        f"layers/{metric}",
        chart_fields={"x": "layer", "y": "value"},
        chart_strings={"title": f"{prefix}layers/{metric} (layer=all runs)"},
    )
    chart.chart_name = "wandb/line/v0"
    return chart


def _retained_note(task: TaskPanels, model: str | None = None) -> Any:
    import wandb_workspaces.reports.v2 as wr

    models = [model] if model else list(task.models)
    lines = [
        f"**Share of the full-data test/{task.metric} kept at {RETAINED_AT:g} of the "
        f"training data** (mean over seeds; Fig. 6):",
        "",
    ]
    for m in models:
        share = task.retained.get(m)
        lines.append(
            f"- {m}: "
            + (f"{share:.1%}" if share is not None else f"no runs at both {RETAINED_AT:g} and 1.0")
        )
    return wr.MarkdownPanel(markdown="\n".join(lines))


def _mcq_panels() -> list[Any]:
    import wandb_workspaces.reports.v2 as wr

    bars = [
        wr.BarPlot(
            title=f"MCQ {mode}: accuracy, 95% CI (low | value | high)",
            metrics=[f"mcq/{mode}/ci_low", f"mcq/{mode}/accuracy", f"mcq/{mode}/ci_high"],
            orientation="v",
            groupby=wr.Config("model"),
            groupby_aggfunc="mean",
            groupby_rangefunc="minmax",
        )
        for mode in MCQ_MODES
    ]
    chart = wr.CustomChart.from_table(
        "mcq/by_difficulty",
        chart_fields={"label": "readers_correct", "value": "accuracy"},
        chart_strings={"title": "MCQ accuracy by difficulty (share of readers correct)"},
    )
    chart.chart_name = "wandb/bar/v0"
    return [*bars, chart]


def _filters(group: str | None, **config: str) -> str:
    parts = [f"Metric('Group') == {group!r}"] if group else []
    parts += [f"Config({k.replace('__', '.')!r}) == {v!r}" for k, v in config.items()]
    return " and ".join(parts)


# ----------------------------------------------------------------------------- builders


def build_workspace(
    entity: str, project: str, group: str | None = None, tasks: Sequence[TaskPanels] | None = None
) -> Any:
    """The project's workspace (a ``wandb_workspaces.workspaces.Workspace``; not saved).

    Runs (of ``group`` when given) are grouped by model identity, task, layer and training
    fraction, so every panel shows one bar or point per configuration, averaged over seeds.
    Sections: primary metric with CI bounds (per metric of ``tasks``, else every metric a
    task may have), per-class AUROC (tasks with more than two classes), layer sweeps,
    data-fraction sweeps, MCQ. Needs no network.
    """
    import wandb_workspaces.reports.v2 as wr
    import wandb_workspaces.workspaces as ws

    metrics = list(dict.fromkeys(t.metric for t in tasks)) if tasks else list(DEFAULT_METRICS)
    per_class = [t for t in tasks or () if len(t.classes) > 2]
    sections = [
        ws.Section(
            name="Primary metric by model (95% CI)",
            is_open=True,
            panels=[
                *(_primary_panel(m) for m in metrics),
                wr.MarkdownPanel(markdown=ERROR_BARS_NOTE),
            ],
        ),
        ws.Section(name="Per-class AUROC", panels=[_per_class_panel(t) for t in per_class]),
        ws.Section(
            name="Layer sweeps",
            panels=[
                p
                for m in metrics
                for p in (*_sweep_panels(m, LAYER, "layer"), _layer_curve_panel(m))
            ],
        ),
        ws.Section(
            name="Data-fraction sweeps",
            panels=[
                *(p for m in metrics for p in _sweep_panels(m, FRACTION, "training fraction")),
                *(_retained_note(t) for t in tasks or ()),
            ],
        ),
        ws.Section(name="MCQ", panels=_mcq_panels()),
    ]
    return ws.Workspace(
        entity=entity,
        project=project,
        name=f"medprobe{f' {group}' if group else ''}",
        sections=sections,
        runset_settings=ws.RunsetSettings(
            filters=_filters(group),
            groupby=[ws.Config(k) for k in TABLE_GROUPS],
            pinned_columns=_columns(),
        ),
    )


def _columns() -> list[str]:
    from wandb_workspaces.reports.v2 import Config
    from wandb_workspaces.reports.v2.interface import _metric_to_backend_pc

    return ["run:displayName", *(_metric_to_backend_pc(Config(k)) for k in TABLE_GROUPS)]


def build_report(
    entity: str, project: str, group: str | None = None, tasks: Sequence[TaskPanels] | None = None
) -> Any:
    """The paper-like report (a ``wandb_workspaces.reports.v2.Report``; not saved).

    Per task (``tasks``; None: one grid over all tasks per metric): a grid of the runs of
    that task grouped by model identity, with the primary metric's CI bars and per-class
    AUROC; per model of the task a grid of its layer sweep and data-fraction sweep and the
    share retained at 10%. Then the MCQ accuracy (runs named ``mcq ...``) and the runs table
    grouped by model, task, layer, fraction. Building needs no network; W&B resolves the
    project when the report is saved.
    """
    import wandb_workspaces.reports.v2 as wr

    def runset(name: str, filters: str, groupby: Sequence[str] = (MODEL,), query: str = "") -> Any:
        return wr.Runset(
            entity=entity,
            project=project,
            name=name,
            filters=filters,
            query=query,
            groupby=[f"config.{k}" for k in groupby],
        )

    blocks: list[Any] = [wr.P(ERROR_BARS_NOTE)]
    if not tasks:
        blocks += [
            wr.H2("All tasks"),
            wr.PanelGrid(
                runsets=[runset("all runs", _filters(group), (TASK, MODEL))],
                panels=[_primary_panel(m) for m in DEFAULT_METRICS],
            ),
        ]
    for t in tasks or ():
        panels = [_primary_panel(t.metric, t.name)]
        if len(t.classes) > 2:
            panels.append(_per_class_panel(t))
        blocks += [
            wr.H2(f"Task {t.name}"),
            wr.PanelGrid(
                runsets=[runset(t.name, _filters(group, task__name=t.name))], panels=panels
            ),
        ]
        for m in t.models:
            sweeps = [
                *_sweep_panels(t.metric, LAYER, "layer", f"{t.name} {m}: "),
                _layer_curve_panel(t.metric, f"{t.name} {m}: "),
                *_sweep_panels(t.metric, FRACTION, "training fraction", f"{t.name} {m}: "),
                _retained_note(t, m),
            ]
            blocks += [
                wr.H3(f"{t.name}: {m}, layer and data-fraction sweeps"),
                wr.PanelGrid(
                    runsets=[
                        runset(
                            f"{t.name} {m}", _filters(group, task__name=t.name, model__name=m), ()
                        )
                    ],
                    panels=sweeps,
                ),
            ]
    blocks += [
        wr.H2("MCQ accuracy by difficulty"),
        wr.PanelGrid(
            runsets=[runset("mcq", _filters(group), (), query="mcq")], panels=_mcq_panels()
        ),
        wr.H2("Runs"),
        wr.PanelGrid(
            runsets=[
                wr.Runset(
                    entity=entity,
                    project=project,
                    name="runs",
                    filters=_filters(group),
                    groupby=[f"config.{k}" for k in TABLE_GROUPS],
                    pinned_columns=_columns(),
                )
            ]
        ),
    ]
    return wr.Report(
        entity=entity,
        project=project,
        title=f"medprobe: {project}{f' ({group})' if group else ''}",
        description="Linear-probe comparisons by model identity (built by `medprobe dashboard`).",
        blocks=blocks,
        width="fluid",
    )


# ----------------------------------------------------------------------------- inspection


def _panels(obj: Any) -> list[Any]:
    import wandb_workspaces.reports.v2 as wr
    import wandb_workspaces.workspaces as ws

    if isinstance(obj, ws.Workspace):
        return [p for s in obj.sections for p in s.panels]
    return [p for b in obj.blocks if isinstance(b, wr.PanelGrid) for p in b.panels]


def _key(m: Any, default: str = "summary") -> tuple[str, str]:
    import wandb_workspaces.reports.v2 as wr

    if isinstance(m, wr.Config):
        return ("config", m.name)
    if isinstance(m, (wr.Metric, wr.SummaryMetric)):
        return ("summary", m.name)
    name = str(m)
    return ("config", name[len("config.") :]) if name.startswith("config.") else (default, name)


def referenced_keys(obj: Any) -> set[tuple[str, str]]:
    """Every run key a workspace or report reads: ``("summary", key)`` (bar and scatter
    metrics), ``("config", dotted key)`` (axes, groupings, run-set groupings and filters),
    ``("table", key)`` (custom charts over a logged table)."""
    import wandb_workspaces.reports.v2 as wr
    import wandb_workspaces.workspaces as ws

    keys: set[tuple[str, str]] = set()
    for p in _panels(obj):
        if isinstance(p, wr.BarPlot):
            keys |= {_key(m) for m in p.metrics}
        elif isinstance(p, wr.ScatterPlot):
            keys |= {_key(m) for m in (p.x, p.y, p.z) if m is not None}
        elif isinstance(p, wr.CustomChart):
            keys.add(("table", p.query["summaryTable"]["tableKey"]))
        if getattr(p, "groupby", None) is not None:
            keys.add(_key(p.groupby, "config"))
    if isinstance(obj, ws.Workspace):
        groupings = [g.name for g in obj.runset_settings.groupby]
        filters = [str(obj.runset_settings.filters)]
    else:
        runsets = [r for b in obj.blocks if isinstance(b, wr.PanelGrid) for r in b.runsets]
        groupings = [g for r in runsets for g in r.groupby]
        filters = [str(r.filters) for r in runsets]
    keys |= {("config", g.removeprefix("config.")) for g in groupings}
    for f in filters:
        for part in f.split("Config(")[1:]:
            keys.add(("config", part.split(")")[0].strip("'\"")))
    return keys


def spec(
    workspace: Any,
    report: Any,
    *,
    group: str | None = None,
    tasks: Sequence[TaskPanels] | None = None,
) -> dict[str, Any]:
    """A JSON-able record of what :func:`main` saves: the inputs (entity, project, group,
    tasks) that rebuild both, the workspace's W&B view spec and the report's W&B spec (its
    run sets without the project id, which W&B resolves when it is saved)."""
    offline = copy.deepcopy(report)
    for b in offline.blocks:
        for r in getattr(b, "runsets", ()):
            r.entity = r.project = ""
    return {
        "entity": workspace.entity,
        "project": workspace.project,
        "group": group,
        "tasks": [asdict(t) for t in tasks] if tasks is not None else None,
        "workspace": workspace._to_model().model_dump(
            by_alias=True, exclude_none=True, mode="json"
        ),
        "report": offline._to_model().model_dump(by_alias=True, exclude_none=True, mode="json"),
    }


# ----------------------------------------------------------------------------- command


def _parser() -> argparse.ArgumentParser:
    ap = ArgumentParser(
        prog="medprobe dashboard",
        description="Save a W&B workspace and report comparing a project's runs by model "
        "identity (needs network and a W&B API key; without them the specification is "
        f"written to <out>/{SPEC_FILE} to save later with --from-spec).",
    )
    ap.add_argument("--project", help="W&B project (required unless --from-spec)")
    ap.add_argument("--entity", help="W&B entity (default: your default entity)")
    ap.add_argument("--group", help="only the runs of this W&B group (e.g. a sweep folder)")
    ap.add_argument(
        "--out",
        type=Path,
        default=Path("dashboard"),
        help="folder for the offline specification (default: ./dashboard)",
    )
    ap.add_argument("--from-spec", type=Path, help=f"save a {SPEC_FILE} written offline")
    return ap


def _api() -> Any:
    """A W&B public API client, or None without an API key."""
    from medprobe.tracking import _has_api_key

    if not _has_api_key():
        return None
    import wandb

    return wandb.Api(timeout=20)


def _online_tasks(api: Any, entity: str, project: str, group: str | None) -> list[TaskPanels]:
    runs = api.runs(f"{entity}/{project}", filters={"group": group} if group else None)
    return tasks_from_runs((dict(r.config), dict(r.summary)) for r in runs)


def main(argv: Sequence[str] | None = None) -> int:
    """``medprobe dashboard --project P [--entity E] [--group G] [--out DIR]``.

    Online: reads the runs (tasks, classes, models, the 10% share), saves the workspace and
    the report, prints both URLs. Without an API key or network: one line on stderr, the
    specification in ``<out>/dashboard_spec.json``, exit status 0.

    Raises:
        ConfigError: no ``--project`` (and no ``--from-spec``); an unreadable spec file; no
            entity given and none could be looked up.
    """
    args = _parser().parse_args(argv)
    group, tasks = args.group, None
    if args.from_spec is not None:
        try:
            saved = json.loads(Path(args.from_spec).read_text())
            entity, project, group = saved["entity"], saved["project"], saved["group"]
            tasks = [
                TaskPanels(**{**t, "classes": tuple(t["classes"]), "models": tuple(t["models"])})
                for t in saved["tasks"] or ()
            ] or None
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ConfigError(f"cannot read the dashboard spec {args.from_spec}: {e}") from None
        entity, project = args.entity or entity, args.project or project
    elif not args.project:
        raise ConfigError("medprobe dashboard needs --project (or --from-spec)")
    else:
        entity, project = args.entity, args.project

    offline_reason = None
    try:
        api = _api()
        if api is None:
            offline_reason = "no W&B API key (wandb login or WANDB_API_KEY)"
        else:
            entity = entity or api.default_entity
            if args.from_spec is None:
                tasks = _online_tasks(api, entity, project, group) or None
    except Exception as e:  # no network, a wrong key: keep the spec for later
        offline_reason = f"W&B unreachable ({type(e).__name__}: {str(e).splitlines()[0][:120]})"
    if offline_reason is not None:
        workspace = build_workspace(entity or "<entity>", project, group, tasks)
        report = build_report(entity or "<entity>", project, group, tasks)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        path = out / SPEC_FILE
        path.write_text(json.dumps(spec(workspace, report, group=group, tasks=tasks), indent=1))
        print(
            f"medprobe dashboard: {offline_reason}; nothing saved, the specification is in "
            f"{path} (save it later: medprobe dashboard --from-spec {path})",
            file=sys.stderr,
        )
        return 0
    if not entity:
        raise ConfigError("no W&B entity: pass --entity")
    workspace = build_workspace(entity, project, group, tasks).save()
    report = build_report(entity, project, group, tasks).save()
    print(f"workspace: {workspace.url}")
    print(f"report: {report.url}")
    return 0
