"""``medprobe dashboard`` (issue 17, items 1, 2, 4): the workspace and report specification
built from offline tiny-model sweeps, without network.

W&B 0.31 offline runs keep their config and summary only in the binary ``run-*.wandb`` log
(no ``wandb-summary.json`` / ``config.yaml`` until synced), so the keys a run logs are
derived here exactly as the sink logs them: a single job's ``results.config`` and
:func:`medprobe.tracking.summary_metrics`; a ``layer=all`` job's
:func:`~medprobe.tracking.layer_curve_config` / :func:`~medprobe.tracking.layer_curve_summary`
and table ``layers/<metric>``; an MCQ run's :func:`medprobe.mcq.evaluate.wandb_log`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import isolated_env, run_medprobe

from medprobe import dashboard, tracking
from medprobe.results import find_results, read_layer_curve

pytest.importorskip("wandb_workspaces")
import wandb_workspaces.reports.v2 as wr  # noqa: E402
import wandb_workspaces.workspaces as ws  # noqa: E402

KNEE = "T8_knee_kl"
METRIC = "auroc_macro"  # task=csv's primary metric


@dataclass(frozen=True)
class Run:
    kind: str  # "single" | "layers" | "mcq"
    config: dict[str, Any]
    summary: dict[str, Any]
    tables: frozenset[str]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> list[Run]:
    """Offline W&B runs of tiny-model sweeps: two models over one extractor kind (clip,
    plip) x train_fraction 0.5, 1.0 x seed 0, 1 at layer 2; a layer=all run of clip; and the
    keys an MCQ run logs."""
    from tiny_models import save_tiny_clip

    tmp = tmp_path_factory.mktemp("dashboard")
    weights = {"clip": save_tiny_clip(tmp / "tiny_clip", seed=0),
               "plip": save_tiny_clip(tmp / "tiny_plip", seed=1)}  # fmt: skip
    common = ["task=csv", f"data_root={shared_data / KNEE}", "tracker.mode=offline",
              "bootstrap.n=50", "progress=false"]  # fmt: skip
    for name, w in weights.items():
        run_medprobe(tmp, "--multirun", *common, f"model={name}", f"model.hf_id={w}", "layer=2",
                     "train_fraction=0.5,1.0", "seed=0,1", f"output_dir={tmp / name}")  # fmt: skip
    run_medprobe(tmp, *common, "model=clip", f"model.hf_id={weights['clip']}", "layer=all",
                 f"output_dir={tmp / 'layers'}")  # fmt: skip
    out = []
    for r in find_results([tmp / "clip", tmp / "plip"]):
        assert r.tracker is not None and r.tracker.mode == "offline" and r.tracker.dir
        out.append(Run("single", r.config, tracking.summary_metrics(r), frozenset()))
    curve = read_layer_curve(tmp / "layers" / "layers.json")
    assert curve.tracker is not None and curve.tracker.mode == "offline"
    out.append(Run("layers", tracking.layer_curve_config(curve),
                   tracking.layer_curve_summary(curve), frozenset({f"layers/{curve.metric}"})))  # fmt: skip
    from medprobe.mcq.evaluate import wandb_log

    stratum = {"label": "<25%", "n": 4, "accuracy": 0.5, "ci_low": 0.1, "ci_high": 0.9}
    mode = {"accuracy": 0.5, "ci_low": 0.2, "ci_high": 0.8, "unparsed_rate": 0.0,
            "chance": 0.2, "by_difficulty": [stratum]}  # fmt: skip
    summary = {"cases": "cases.json", "n_cases": 8, "exemplars": [], "model": "tiny",
               "modes": {m: mode for m in dashboard.MCQ_MODES}}  # fmt: skip
    log = wandb_log(summary, tmp)
    out.append(Run("mcq", log.config, log.metrics, frozenset({"mcq/by_difficulty"})))
    return out


def _has_config(config: dict[str, Any], dotted: str) -> bool:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _names(metrics: Any) -> list[str]:
    return [str(getattr(m, "name", m)) for m in metrics]


def _tasks(runs: list[Run]) -> list[dashboard.TaskPanels]:
    return dashboard.tasks_from_runs((r.config, r.summary) for r in runs)


def test_tasks_found_from_the_runs(runs: list[Run]) -> None:
    assert len([r for r in runs if r.kind == "single"]) == 8
    (task,) = _tasks(runs)
    assert (task.name, task.metric, task.models) == (KNEE, METRIC, ("clip", "plip"))
    assert task.classes == ("0", "1", "2", "3", "4")
    # no run at 0.1 here; the share at 0.5 is the mean over seeds at 0.5 / at 1.0
    assert task.retained == {}
    single = [r for r in runs if r.kind == "single" and r.config["model"]["name"] == "clip"]

    def mean(f: float) -> float:
        vals = [r.summary[f"test/{METRIC}"] for r in single if r.config["train_fraction"] == f]
        assert len(vals) == 2  # seeds 0, 1
        return sum(vals) / len(vals)

    share = dashboard.retained_share([(r.config, r.summary) for r in runs if r.kind == "single"],
                                     KNEE, "clip", METRIC, at=0.5)  # fmt: skip
    assert share == pytest.approx(mean(0.5) / mean(1.0))


def test_panels_only_read_keys_the_runs_log(runs: list[Run]) -> None:
    tasks = _tasks(runs)
    probe_runs = [r for r in runs if r.kind in ("single", "layers")]
    mcq = [r for r in runs if r.kind == "mcq"]
    for built in (dashboard.build_workspace("e", "p", "g", tasks),
                  dashboard.build_workspace("e", "p"),
                  dashboard.build_report("e", "p", "g", tasks)):  # fmt: skip
        keys = dashboard.referenced_keys(built)
        assert keys, built
        for section, key in sorted(keys):
            if section == "table" and key.startswith("layers/") and key != f"layers/{METRIC}":
                # the task-less workspace offers every task metric's curve; a layer=all run
                # logs its own task's primary metric only
                assert key.removeprefix("layers/") in dashboard.DEFAULT_METRICS, key
            elif section == "table":
                assert any(key in r.tables for r in runs), key
            elif key.startswith("mcq/"):
                assert all(key in r.summary for r in mcq), key
            elif section == "summary" and key.startswith("test/auroc/"):
                assert all(key in r.summary for r in probe_runs if r.kind == "single"), key
            elif section == "summary":
                if (key.removeprefix("test/").split("_ci_")[0] in dashboard.DEFAULT_METRICS
                        and not built.__class__.__name__ == "Report"):  # fmt: skip
                    # the workspace offers every task metric; runs log them all
                    assert all(key in r.summary for r in runs if r.kind == "single"), key
                else:  # the task's primary metric: every probe run, layer curves included
                    assert all(key in r.summary for r in probe_runs), key
            elif key == "model":  # MCQ runs are grouped by their model
                assert all(_has_config(r.config, key) for r in mcq), key
            else:
                assert all(_has_config(r.config, key) for r in probe_runs), key
    # the primary metric with its CI bounds is logged by the layer-curve run too
    layers = next(r for r in runs if r.kind == "layers")
    assert {f"test/{METRIC}", f"test/{METRIC}_ci_low", f"test/{METRIC}_ci_high"} <= set(
        layers.summary
    )
    assert layers.config["model"]["name"] == "clip" and layers.config["layer"] == "all"


def test_report_panels(runs: list[Run]) -> None:
    tasks = _tasks(runs)
    report = dashboard.build_report("ent", "proj", "sweep1", tasks)
    assert isinstance(report, wr.Report) and report.title == "medprobe: proj (sweep1)"
    grids = [b for b in report.blocks if isinstance(b, wr.PanelGrid)]
    headings = [b.text for b in report.blocks if isinstance(b, (wr.H2, wr.H3))]
    assert headings == [f"Task {KNEE}", f"{KNEE}: clip, layer and data-fraction sweeps",
                        f"{KNEE}: plip, layer and data-fraction sweeps",
                        "MCQ accuracy by difficulty", "Runs"]  # fmt: skip
    task_grid, clip_grid, plip_grid, mcq_grid, table_grid = grids
    (rs,) = task_grid.runsets
    assert (rs.entity, rs.project, rs.groupby) == ("ent", "proj", ["config.model.name"])
    assert rs.filters == "Metric('Group') == 'sweep1' and Config('task.name') == 'T8_knee_kl'"
    primary, per_class = task_grid.panels
    assert isinstance(primary, wr.BarPlot)
    assert primary.title == f"{KNEE}: test/{METRIC} by model, 95% CI (low | value | high)"
    assert _names(primary.metrics) == [
        f"test/{METRIC}_ci_low", f"test/{METRIC}", f"test/{METRIC}_ci_high"]  # fmt: skip
    assert primary.groupby == wr.Config("model.name")  # identity, never model.kind
    assert (primary.groupby_aggfunc, primary.groupby_rangefunc) == ("mean", "minmax")
    assert isinstance(per_class, wr.BarPlot)
    assert per_class.title == f"{KNEE}: per-class AUROC by model"
    assert _names(per_class.metrics) == [f"test/auroc/{c}" for c in "01234"]
    assert per_class.groupby == wr.Config("model.name")

    (rs,) = clip_grid.runsets
    assert "Config('model.name') == 'clip'" in rs.filters
    layer_scatter, layer_bars, curve, frac_scatter, frac_bars, note = clip_grid.panels
    assert isinstance(layer_scatter, wr.ScatterPlot)
    assert (layer_scatter.x, layer_scatter.y) == (wr.Config("layer"), wr.SummaryMetric(
        f"test/{METRIC}"))  # fmt: skip
    assert isinstance(layer_bars, wr.BarPlot) and layer_bars.groupby == wr.Config("layer")
    assert _names(layer_bars.metrics)[::2] == [f"test/{METRIC}_ci_low",
                                                         f"test/{METRIC}_ci_high"]  # fmt: skip
    assert isinstance(curve, wr.CustomChart) and curve.chart_name == "wandb/line/v0"
    assert curve.query == {"summaryTable": {"tableKey": f"layers/{METRIC}"}}
    assert curve.chart_fields == {"x": "layer", "y": "value"}
    assert isinstance(frac_scatter, wr.ScatterPlot) and frac_scatter.x == wr.Config(
        "train_fraction")  # fmt: skip
    assert frac_bars.groupby == wr.Config("train_fraction")
    assert frac_bars.title == (f"{KNEE} clip: test/{METRIC} by training fraction, mean over "
                               "seeds, 95% CI (low | value | high)")  # fmt: skip
    assert isinstance(note, wr.MarkdownPanel) and "clip: no runs at both 0.1 and 1.0" in (
        note.markdown)  # fmt: skip
    assert "Config('model.name') == 'plip'" in plip_grid.runsets[0].filters

    *mcq_bars, by_difficulty = mcq_grid.panels
    assert [b.title for b in mcq_bars] == [
        f"MCQ {m}: accuracy, 95% CI (low | value | high)" for m in dashboard.MCQ_MODES
    ]
    assert _names(mcq_bars[0].metrics) == [
        "mcq/greedy/ci_low", "mcq/greedy/accuracy", "mcq/greedy/ci_high"]  # fmt: skip
    assert mcq_bars[0].groupby == wr.Config("model")
    assert by_difficulty.query == {"summaryTable": {"tableKey": "mcq/by_difficulty"}}
    assert by_difficulty.chart_fields == {"label": "readers_correct", "value": "accuracy"}
    assert mcq_grid.runsets[0].query == "mcq"

    (rs,) = table_grid.runsets
    assert rs.groupby == ["config.model.name", "config.task.name", "config.layer",
                          "config.train_fraction"]  # fmt: skip
    assert "config:model.value.name" in rs.pinned_columns


def test_workspace_panels(runs: list[Run]) -> None:
    w = dashboard.build_workspace("ent", "proj", "sweep1", _tasks(runs))
    assert isinstance(w, ws.Workspace) and w.name == "medprobe sweep1"
    assert [s.name for s in w.sections] == ["Primary metric by model (95% CI)",
                                            "Per-class AUROC", "Layer sweeps",
                                            "Data-fraction sweeps", "MCQ"]  # fmt: skip
    assert [g.name for g in w.runset_settings.groupby] == ["model.name", "task.name", "layer",
                                                           "train_fraction"]  # fmt: skip
    assert w.runset_settings.filters == "Metric('Group') == 'sweep1'"
    bars = w.sections[0].panels[0]
    assert isinstance(bars, wr.BarPlot)
    assert _names(bars.metrics) == [f"test/{METRIC}_ci_low", f"test/{METRIC}",
                                              f"test/{METRIC}_ci_high"]  # fmt: skip
    assert bars.groupby is None  # the runs table's grouping: model, task, layer, fraction
    assert "CI low | value | CI high" in w.sections[0].panels[1].markdown
    # the wire spec groups by the identity's config key
    view = w._to_model().model_dump(by_alias=True, exclude_none=True, mode="json")
    grouping = view["spec"]["section"]["runSets"][0]["grouping"]
    assert grouping[0] == {"section": "config", "name": "model.value.name"}


def test_offline_command_writes_the_spec_and_from_spec_rebuilds_it(tmp_path: Path) -> None:
    env = isolated_env(tmp_path)
    proc = run_medprobe(tmp_path, "dashboard", "--project", "P", "--entity", "E", "--group",
                        "g1", "--out", str(tmp_path / "out"))  # fmt: skip
    assert proc.returncode == 0
    err = proc.stderr.strip().splitlines()
    spec_file = tmp_path / "out" / "dashboard_spec.json"
    assert err == [f"medprobe dashboard: no W&B API key (wandb login or WANDB_API_KEY); nothing "
                   f"saved, the specification is in {spec_file} (save it later: medprobe "
                   f"dashboard --from-spec {spec_file})"]  # fmt: skip
    spec = json.loads(spec_file.read_text())
    assert (spec["entity"], spec["project"], spec["group"], spec["tasks"]) == ("E", "P", "g1",
                                                                               None)  # fmt: skip
    assert spec["workspace"]["displayName"] == "medprobe g1"
    assert spec["report"]["displayName"] == "medprobe: P (g1)"
    again = run_medprobe(tmp_path, "dashboard", "--from-spec", str(spec_file), "--out",
                         str(tmp_path / "again"))  # fmt: skip
    assert again.returncode == 0
    respec = json.loads((tmp_path / "again" / "dashboard_spec.json").read_text())
    assert (respec["entity"], respec["project"], respec["group"]) == ("E", "P", "g1")
    assert env.get("WANDB_API_KEY") is None
    missing = run_medprobe(tmp_path, "dashboard", check=False)
    assert missing.returncode == 2
    assert missing.stderr.strip() == (
        "medprobe: error: medprobe dashboard needs --project (or --from-spec)"
    )
