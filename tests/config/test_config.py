"""The config: every model x task and every experiment composes and converts to typed objects
(no weights loaded); typos, values outside a closed set and keys of another task fail at
compose time naming the valid ones; each default is written once (the schema)."""

from __future__ import annotations

import dataclasses
import typing
from enum import Enum, StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import REPO, Compose
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import OmegaConf

from medprobe.config import (
    POOLINGS,
    TASK_SCHEMAS,
    ClusterConfig,
    Config,
    ConfigError,
    CsvTaskConfig,
    DType,
    ModelConfig,
    OnBadRow,
    OnError,
    Pooling,
    ProbeBackend,
    ProbeConfig,
    ProbeDType,
    PromptConfig,
    Quantization,
    SelectionMetric,
    T5TaskConfig,
    TaskMetric,
    TrackerConfig,
    TrackerMode,
    conf_dir,
    register_configs,
    schema,
    to_typed,
    validate,
)
from medprobe.registry import EXTRACTORS, PROBES, TASKS, Registry, RegistryError

register_configs()
CONF = conf_dir()
MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))
TASK_FILES = sorted(p.stem for p in (CONF / "task").glob("*.yaml"))
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
PAPER_MODELS = ["idefics80b", "idefics9b", "clip", "plip"]


@pytest.fixture
def paths_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The environment the experiments read: MEDPROBE_DATA (dataset parent), MEDPROBE_CLIP."""
    monkeypatch.setenv("MEDPROBE_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("MEDPROBE_CLIP", str(tmp_path / "clip"))
    return tmp_path


def composition_error(compose: Compose, *overrides: str) -> str:
    """The text Hydra prints for a failed compose: its message and the OmegaConf cause."""
    with pytest.raises(ConfigCompositionException) as e:
        compose(*overrides)
    return f"{e.value}\n{e.value.__cause__}"


def assert_typed(obj: Any, path: str = "cfg") -> int:
    """Every field of every dataclass has its declared type: Enum-typed fields hold members
    of that Enum (not strings), lists and dicts are plain. Returns the number of enum fields."""
    assert dataclasses.is_dataclass(obj) and not isinstance(obj, type), path
    hints = typing.get_type_hints(type(obj))
    n_enums = 0
    for f in dataclasses.fields(obj):
        value, hint = getattr(obj, f.name), hints[f.name]
        assert not OmegaConf.is_config(value), f"{path}.{f.name} is still an OmegaConf node"
        enums = [t for t in typing.get_args(hint) or (hint,) if isinstance(t, type) and issubclass(t, Enum)]  # fmt: skip
        if enums:
            assert value is None or isinstance(value, enums[0]), f"{path}.{f.name}={value!r}"
            n_enums += 1
        if dataclasses.is_dataclass(value):
            n_enums += assert_typed(value, f"{path}.{f.name}")
    return n_enums


# ---------------------------------------------------------------------------------------------
# composition


def test_conf_dir_is_the_repo_conf() -> None:
    assert CONF == REPO / "conf"
    assert {"effnet_lite0", "clip", "plip"} <= set(MODELS)
    assert {"demo", "csv"} <= set(TASK_FILES)
    assert set(TASK_SCHEMAS) == {"demo", "csv", "hf", *(f"t{k}" for k in range(1, 9))}


#: model configs that set the probed layer
MODEL_LAYERS = {
    "idefics80b": 32, "idefics9b": 13, "qwen2_5_vl_7b": 11, "medgemma_4b": 14,
    "llava_onevision_7b": 11, "idefics3_8b": 13, "smolvlm_2b": 10, "llama32_vision_11b": 16,
    "paligemma2_3b": 10, "internvl3_8b": 11, "siglip_base": "pooled", "siglip2_base": "pooled",
    "biomedclip": "embeds", "dinov2_base": "norm", "rad_dino": "norm", "phikon": "norm",
    "uni": "norm", "virchow2": "norm",
}  # fmt: skip
#: vision foundation models whose config names a default layer but caches all layers
NAMED_DEFAULT_LAYER = {"siglip_base", "siglip2_base", "biomedclip", "dinov2_base", "rad_dino",
                       "phikon"}  # fmt: skip


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("task", TASK_FILES)
def test_every_model_task_composes_validates_and_converts(
    compose: Compose, model: str, task: str
) -> None:
    cfg = compose(f"model={model}", f"task={task}", "data_root=/data")
    validate(cfg)
    assert cfg.model.kind in EXTRACTORS
    assert cfg.task.kind in TASKS
    # a model group may set the probed layer (# @package _global_): the paper's IDEFICS layers,
    # the VLMs' 0.4 of their depth (docs/models.md) and the vision foundation models' named
    # layers (docs/models.md)
    assert OmegaConf.select(cfg, "layer") == MODEL_LAYERS.get(model, -1)
    typed = to_typed(cfg)
    assert isinstance(typed, Config) and type(typed.task) is TASK_SCHEMAS[typed.task.kind]
    assert isinstance(typed.model, ModelConfig) and isinstance(typed.probe, ProbeConfig)
    # model: dtype, pooling, quantization, prompt_format, resize; task: metric; probe: class_weight,
    # selection_metric,
    # backend, dtype, fraction_of; tracker: name, mode; data: on_error, fingerprint; bootstrap:
    # unit, auroc_ci; cluster: name; on_bad_row (paper tasks, csv, hf); T5 / T6 options; task=hf:
    # split_by
    extra = (task != "demo") + (task in ("t5", "t6", "hf"))
    assert assert_typed(typed) == 18 + extra
    assert (typed.model.name, typed.task.name) == (cfg.model.name, cfg.task.name)
    assert typed.model.name == model  # identity: the config choice
    assert typed.layer == cfg.layer and isinstance(typed.probe.C_grid, list)
    if model in MODEL_LAYERS and model not in NAMED_DEFAULT_LAYER:  # ${layer} resolved
        assert typed.model.layers == typed.layer
    if task not in ("demo", "hf"):  # task.root defaults to data_root, resolved
        assert typed.task.root == "/data"  # type: ignore[attr-defined]
    if task == "csv":
        assert typed.task.name == "data"  # the data root's folder name


def test_defaults_are_the_embedded_demo(compose: Compose) -> None:
    cfg = compose()
    assert (cfg.model.name, cfg.task.name, cfg.probe.name, cfg.tracker.name) == (
        "effnet_lite0",
        "demo",
        "logistic",
        "wandb",
    )
    assert cfg.bootstrap.n == 1000 and cfg.bootstrap.ci == 0.95
    assert cfg.model.layers == "all"
    assert cfg.data.on_error.value == "stop"
    typed = to_typed(cfg)
    assert typed.probe.C_grid == [1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0]
    assert typed.dist_timeout_min == 720.0 and typed.cluster.timeout_min == 240
    assert typed.tracker.mode is TrackerMode.auto and typed.data.on_error is OnError.stop
    assert typed.model.quantization is Quantization["none"] and typed.model.dtype is DType.float32
    assert typed.task.metric is TaskMetric.auroc_macro
    assert typed.output_dir is None and typed.layer == -1 and typed.train_fraction == 1.0


def test_plip_is_clip_with_plip_weights(compose: Compose) -> None:
    cfg = compose("model=plip")
    assert (cfg.model.name, cfg.model.kind, cfg.model.hf_id) == ("plip", "clip", "vinid/plip")


def test_enums_compare_and_print_as_their_values() -> None:
    q = Quantization["8bit"]
    assert q == "8bit" and str(q) == "8bit" and f"{q}" == "8bit" and q.value == "8bit"
    assert [str(v) for v in Quantization] == ["none", "8bit", "4bit"]
    assert ProbeBackend.torch == "torch" and OnBadRow("skip") is OnBadRow.skip
    enums = [v for v in vars(schema).values() if isinstance(v, type) and issubclass(v, Enum)]
    enums.remove(StrEnum)  # imported there
    # issue 13: ResamplingUnit, AurocCI, FractionOf; issue 12: PromptFormat; 14.5: ResizeMode;
    # 16.6: SplitRole, SplitBy (task=hf)
    assert len(enums) == 23 and Quantization in enums
    for enum in enums:  # OmegaConf looks members up by name; hash(member) is hash(name)
        assert issubclass(enum, StrEnum)
        for member in enum:
            assert member.name == member.value and hash(member) == hash(member.value)
    assert {DType.float32: 1}["float32"] == 1 and {"8bit": 1}[Quantization["8bit"]] == 1


# ---------------------------------------------------------------------------------------------
# mistakes fail at compose time, naming the valid choices


def test_misspelled_key_fails_naming_the_keys(compose: Compose) -> None:
    with pytest.raises(ConfigCompositionException, match="modle"):
        compose("modle=clip")
    err = composition_error(compose, "model.batchsize=3")
    assert "Key 'batchsize' not in 'ModelConfig(name, kind, hf_id," in err
    assert "batch_size" in err


def test_unknown_option_names_valid_choices(compose: Compose) -> None:
    with pytest.raises(MissingConfigException) as e:
        compose("model=clipp")
    assert "clip" in str(e.value.options) or "clip" in str(e.value)


def test_task_option_typo_fails_naming_the_task_options(compose: Compose) -> None:
    err = composition_error(compose, "task=t5", "task.options.eyepacs_tset=drop")
    assert "Key 'eyepacs_tset' not in 'T5Options(eyepacs_test)'" in err
    err = composition_error(compose, "task=t6", "task.options.suspected=drop")
    assert "T6Options(suspected_glaucoma)" in err
    err = composition_error(compose, "task=t2", "task.options.plip=true")
    assert "T2Options(plip_counting)" in err


@pytest.mark.parametrize(
    ("overrides", "key", "schema"),
    [
        (["task=t5", "task.image_dir=x"], "image_dir", "T5TaskConfig("),  # T3 / T4 only
        (["task=t1", "task.classes=[a,b]"], "classes", "T1TaskConfig("),  # the adapter's
        (["task=t1", "task.options.x=1"], "options", "T1TaskConfig("),  # T1 has no options
        (["task=demo", "task.root=/x"], "root", "DemoTaskConfig("),  # the demo ships its data
        (["task=t3", "task.roi_boxes=b.csv"], "roi_boxes", "T3TaskConfig("),  # T8 only
        (["task=t7", "task.val_fraction=0.1"], "val_fraction", "T7TaskConfig("),  # fixed split
        (["task=demo", "task.on_bad_row=skip"], "on_bad_row", "DemoTaskConfig("),  # no rows
    ],
)
def test_a_key_of_another_task_fails_at_compose_time(
    compose: Compose, overrides: list[str], key: str, schema: str
) -> None:
    err = composition_error(compose, *overrides)
    assert f"Key '{key}' not in '{schema}" in err


@pytest.mark.parametrize(
    ("overrides", "valid"),
    [
        (["model.quantization=16bit"], "none, 8bit, 4bit"),
        (["probe.backend=jax"], "sklearn, torch"),
        (
            ["model.pooling=max"],
            "default, cls, mean, mean_patch, cls_mean_patch, last, mean_after_image, image_latents, "
            "mean_image",
        ),
        (["model.dtype=int8"], "float32, bfloat16, float16"),
        (["probe.dtype=float16"], "float32, float64"),
        (["probe.class_weight=foo"], "balanced"),
        (["probe.selection_metric=auc"], "auroc_macro, f1_macro, accuracy, neg_log_loss"),
        (["task.metric=auc"], "auroc_macro, f1_macro, accuracy"),
        (["tracker.mode=on"], "auto, online, offline, disabled"),
        (["tracker.name=mlflow"], "wandb, none"),
        (["data.on_error=ignore"], "stop, skip"),
        (["data.fingerprint=mtime"], "content, stat"),
        (["cluster.name=pbs"], "none, local, slurm"),
        (["task=t1", "task.on_bad_row=drop"], "stop, skip"),
        (["task=t5", "task.options.eyepacs_test=keep"], "train, drop"),
        (["task=t6", "task.options.suspected_glaucoma=maybe"], "drop, positive, negative"),
    ],
)
def test_value_outside_a_closed_set_fails_naming_the_valid_ones(
    compose: Compose, overrides: list[str], valid: str
) -> None:
    err = composition_error(compose, *overrides)
    bad = overrides[-1].split("=", 1)[1]
    assert f"Invalid value '{bad}', expected one of [{valid}]" in err


def test_closed_sets_match_the_code_that_uses_them() -> None:
    from medprobe.extractors import clip, idefics
    from medprobe.probe import BACKENDS, SELECTION_METRICS, TORCH_DTYPES

    assert [str(m) for m in SelectionMetric] == list(SELECTION_METRICS)
    assert [str(b) for b in ProbeBackend] == list(BACKENDS)
    assert [str(d) for d in ProbeDType] == list(TORCH_DTYPES)
    assert [str(q) for q in Quantization] == list(idefics.QUANTIZATIONS)
    assert [str(p) for p in POOLINGS["clip"][1:]] == list(clip.POOLINGS)
    assert [str(p) for p in POOLINGS["idefics"][1:]] == list(idefics.POOLINGS)
    from medprobe.extractors import vision, vlm

    for kind in ("vision", "timm", "open_clip"):
        assert [str(p) for p in POOLINGS[kind][1:]] == list(vision.POOLINGS)
    assert [str(p) for p in POOLINGS["vlm"][1:]] == list(vlm.POOLINGS)
    assert {str(p) for p in Pooling} == {
        "default", *clip.POOLINGS, *idefics.POOLINGS, *vision.POOLINGS, *vlm.POOLINGS
    }  # fmt: skip
    # the primary metric is one of the summary metrics every run reports with a CI
    from medprobe import stats

    y = np.array([0, 1, 2, 0, 1, 2])
    out = stats.evaluate(y, np.eye(3)[y] * 0.8 + 0.2 / 3, ["a", "b", "c"], multilabel=False,
                         n_boot=2, seed=0)  # fmt: skip
    assert {str(m) for m in TaskMetric} <= set(out)


# ---------------------------------------------------------------------------------------------
# after compose: to_typed / validate


def test_key_forced_in_with_plus_is_refused_by_to_typed(compose: Compose) -> None:
    cfg = compose("task=t5", "data_root=/d", "+task.options.eyepacs_tset=drop")
    with pytest.raises(ConfigError) as e:
        to_typed(cfg)
    assert str(e.value) == (
        "unknown key(s) task.options.eyepacs_tset: task.options has eyepacs_test"
    )
    with pytest.raises(ConfigError, match="unknown key.* modle: the top level has model, task"):
        to_typed(compose("+modle=clip"))
    with pytest.raises(ConfigError, match="eyepacs_tset"):
        validate(cfg)  # validate(DictConfig) converts as to_typed does


def test_to_typed_names_an_unset_environment_variable(
    compose: Compose, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MEDPROBE_DATA", raising=False)
    with pytest.raises(ConfigError) as e:
        to_typed(compose("experiment=fig3"))
    # task.root = ${data_root} = ${oc.env:MEDPROBE_DATA}/t1: the first key that needs it
    assert str(e.value).startswith("task.root: ")
    assert "Environment variable 'MEDPROBE_DATA' not found" in str(e.value)


def test_typed_task_reads_like_the_dictconfig(compose: Compose) -> None:
    cfg = compose("task=t5", "data_root=/d", "task.options.eyepacs_test=drop")
    typed = to_typed(cfg).task
    assert isinstance(typed, T5TaskConfig)
    assert typed.options.eyepacs_test == cfg.task.options.eyepacs_test == "drop"
    assert typed.root == cfg.task.root == "/d" and typed.on_bad_row is OnBadRow.stop
    csv = to_typed(compose("task=csv", "data_root=/data/knee_kl", "task.label_sep=|")).task
    assert isinstance(csv, CsvTaskConfig)
    assert (csv.name, csv.kind, csv.label_sep, csv.val_fraction) == ("knee_kl", "csv", "|", 0.1)


def test_validate_range_and_registry_names(compose: Compose) -> None:
    with pytest.raises(ConfigError, match="train_fraction"):
        validate(compose("train_fraction=0"))
    with pytest.raises(RegistryError, match="Did you mean 'effnet_lite0'"):
        validate(compose("model.kind=effnet_lite"))


@pytest.mark.parametrize(
    ("override", "key", "value"),
    [("task.name=../../etc", "task", "../../etc"), ("task.name=a/b", "task", "a/b"),
     ("model.name=..", "model", ".."), ("task.name=' '", "task", " ")],
)  # fmt: skip
def test_identities_are_one_folder_name(
    compose: Compose, override: str, key: str, value: str
) -> None:
    """task.name=a/b ran, then report stopped on 'bars_a/b.png: No such file or directory';
    medprobe data wrote ../../etc/data/manifest.csv outside outputs/."""
    with pytest.raises(ConfigError) as e:
        validate(compose(override))
    assert str(e.value) == (
        f"{key}.name must be a name usable as one folder name (not empty, '.' or '..'; no '/' "
        f"or '\\'), got {value!r}"
    )
    validate(compose("task.name='T8 knee (OAI)'", "model.name=clip-v2.1"))


def test_pooling_must_be_one_the_model_kind_has(compose: Compose) -> None:
    with pytest.raises(ConfigError) as e:
        validate(compose("model=clip", "model.pooling=last"))
    assert str(e.value) == (
        "model.pooling=last does not apply to model.kind=clip; valid: default, cls, mean"
    )
    with pytest.raises(ConfigError, match="model.kind=effnet_lite0; valid: default$"):
        validate(compose("model.pooling=mean"))
    validate(compose("model=clip", "model.pooling=mean"))
    validate(compose("model=idefics9b", "model.pooling=image_latents", "prompt=general"))


def test_task_kind_needs_its_schema(compose: Compose) -> None:
    """A task YAML of one's own that forgets ``- /schema/task@_here_: <kind>``."""
    cfg = compose("task=t1")
    cfg.task.kind = "t5"  # T1's schema under the T5 adapter
    with pytest.raises(ConfigError, match="task.kind=t5 reads its settings from the T5TaskConfig"):
        validate(cfg)
    with pytest.raises(ConfigError, match="task.min_test_positives must be >= 1"):
        validate(compose("task=t7", "data_root=/d", "task.min_test_positives=0"))


# ---------------------------------------------------------------------------------------------
# each default written once


def _yaml_defaults_repeated(path: Path, node: Any, schema: type) -> list[str]:
    defaults = {f.name: f for f in dataclasses.fields(schema)}
    out = []
    for key, value in node.items():
        if key not in defaults or key in ("name", "kind"):  # identity lines are meant
            continue
        f = defaults[key]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            out += _yaml_defaults_repeated(path, value, type(default))
        elif not isinstance(value, dict) and value == default:
            out.append(f"{path.relative_to(CONF)}: {key}: {value!r}")
    return out


def test_yaml_files_state_only_what_differs_from_the_schema() -> None:
    schemas = {"model": ModelConfig, "probe": ProbeConfig, "prompt": PromptConfig,
               "tracker": TrackerConfig, "cluster": ClusterConfig}  # fmt: skip
    repeated = []
    for path in sorted(CONF.glob("*/*.yaml")):
        group = path.parent.name
        raw = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        assert isinstance(raw, dict)
        raw.pop("defaults", None)
        raw.pop("hydra", None)
        if group == "task":
            repeated += _yaml_defaults_repeated(path, raw, TASK_SCHEMAS[raw["kind"]])
        elif group in schemas:
            node = raw.get(group, {}) if group in raw else raw  # @package _global_ files
            repeated += _yaml_defaults_repeated(path, node, schemas[group])
        elif group == "experiment":
            repeated += _yaml_defaults_repeated(path, raw, Config)
    top = OmegaConf.to_container(OmegaConf.load(CONF / "config.yaml"), resolve=False)
    assert isinstance(top, dict)
    repeated += _yaml_defaults_repeated(CONF / "config.yaml", top, Config)
    # the SLURM launcher's list and dict fields must find these keys while Hydra composes
    allowed = {"cluster/slurm.yaml: setup: []", "cluster/slurm.yaml: additional_parameters: {}"}
    assert set(repeated) <= allowed, repeated
    assert not list(CONF.glob("**/C_grid*"))


# ---------------------------------------------------------------------------------------------
# experiments (paper figures and demos)

SWEEPS = {
    "fig3": {"model": ",".join(PAPER_MODELS), "task": "t1,t2,t3,t4"},
    "fig4": {"model": ",".join(PAPER_MODELS), "task": "t5,t6,t7,t8"},
    "fig5": {"model": ",".join(PAPER_MODELS)},
    "fig6": {
        "model": ",".join(PAPER_MODELS),
        "task": ",".join(f"t{k}" for k in range(1, 9)),
        "train_fraction": "0.01,0.1,0.25,0.5,1.0",
        "seed": "0,1,2,3,4",
    },
    "figS5": {
        "model": "clip,plip,idefics9b,idefics80b",
        "task": ",".join(f"t{k}" for k in range(1, 9)),
    },  # fmt: skip
    "demo_compare": {
        "experiment/demo_compare_model": "effnet_lite0,clip",
        "train_fraction": "0.5,1.0",
    },  # fmt: skip
    "demo_layer_sweep": {},  # one job: layer=all
    "beyond": {
        "model": "idefics80b,qwen2_5_vl_7b,medgemma_4b,dinov2_base,clip",
        "task": ",".join(f"t{k}" for k in range(1, 9)),
    },  # fmt: skip
}


def test_every_experiment_is_tested() -> None:
    assert set(EXPERIMENTS) == set(SWEEPS)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_and_each_swept_value_composes(
    compose: Compose, paths_env: Path, name: str
) -> None:
    cfg = compose(f"experiment={name}", hydra=True)
    swept = cfg.hydra.sweeper.params
    params = {} if swept is None else OmegaConf.to_container(swept)
    assert isinstance(params, dict)
    assert {k: str(v) for k, v in params.items()} == SWEEPS[name]
    typed = to_typed(cfg)
    assert typed.output_dir == f"outputs/experiments/{name}"
    if name.startswith("fig"):
        assert typed.data_root == str(paths_env / "data" / typed.task.name)
    # each value of each swept key composes and converts (one key at a time, the others at
    # the experiment's own choice): every job of the sweep is a valid config
    for key, values in SWEEPS[name].items():
        for value in values.split(","):
            job = to_typed(compose(f"experiment={name}", f"{key}={value}"))
            if key in ("model", "task"):
                assert getattr(job, key).name == value
            elif key == "experiment/demo_compare_model":
                assert job.model.name == value
            else:
                assert str(getattr(job, key)) == value
            if name == "figS5":  # every layer in one job; IDEFICS caches all of them
                assert job.layer == "all" and job.model.layers == "all"
            elif name.startswith("fig") and key == "model":  # fidelity=paper: the authors'
                # "layer 32" of the 80B = hidden_states[39]; the 9B keeps ours (13)
                assert job.layer == {"idefics80b": 39, "idefics9b": 13}.get(value, -1)
            elif name == "beyond" and key == "model" and value in MODEL_LAYERS:
                # at medprobe's own default layers (not the paper's); the large models in bf16
                assert job.layer == MODEL_LAYERS[value]
                if value in NAMED_DEFAULT_LAYER:  # DINOv2: float32, as its card
                    assert str(job.model.dtype) == "float32"
                    continue
                assert job.layer == MODEL_LAYERS[value]
                assert str(job.model.dtype) == "bfloat16"


def test_experiments_set_what_each_figure_needs(compose: Compose, paths_env: Path) -> None:
    fig5 = to_typed(compose("experiment=fig5"))
    assert (fig5.task.name, fig5.model.name, fig5.layer) == ("t7", "idefics80b", 39)
    fig3 = to_typed(compose("experiment=fig3", "model=plip"))
    assert fig3.prompt.name == "pathology" and fig3.model.hf_id == "vinid/plip"
    assert fig3.data_root == str(paths_env / "data" / "t1")
    clip = to_typed(compose("experiment=demo_compare", "experiment/demo_compare_model=clip"))
    assert (clip.model.name, clip.model.hf_id, clip.model.layers) == (
        "clip",
        str(paths_env / "clip"),
        [0, 1, 2],
    )
    effnet = to_typed(compose("experiment=demo_compare"))
    assert (effnet.model.name, effnet.model.hf_id, effnet.model.layers, effnet.layer) == (
        "effnet_lite0",
        None,
        [4, 6, 8],
        "all",
    )
    sweep = to_typed(compose("experiment=demo_layer_sweep"))
    assert (sweep.model.name, sweep.task.name, sweep.layer) == ("effnet_lite0", "demo", "all")


def test_a_list_on_the_command_line_replaces_the_swept_one(compose: Compose) -> None:
    """What Hydra's basic sweeper runs for ``-m experiment=fig3 model=clip,plip seed=1``."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = compose("experiment=fig3", hydra=True).hydra.sweeper.params
    lines = [f"{k}={v}" for k, v in params.items()] + ["model=clip,plip", "seed=1"]
    (jobs,) = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(lines), None)
    assert len(jobs) == 2 * 4
    assert {j[0] for j in jobs} == {"model=clip", "model=plip"} and all(
        j[2] == "seed=1" for j in jobs
    )


def test_registry_lazy_duplicate_and_suggestions() -> None:
    r: Registry[object] = Registry("widget")
    r.register("alpha", "json:dumps")
    with pytest.raises(RegistryError, match="duplicate widget name 'alpha'"):
        r.register("alpha", "json:loads")
    with pytest.raises(RegistryError, match="Did you mean 'alpha'"):
        r.get("alpah")
    import json

    assert r.get("alpha") is json.dumps
    assert "logistic" in PROBES and "demo" in TASKS


def test_multirun_of_an_experiment_runs_its_sweep(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_clip: Path
) -> None:
    """``-m experiment=demo_compare`` runs the sweep of its file (train_fraction 0.5, 1.0),
    the command line narrowing it to the tiny CLIP; each job probes its three layers."""
    import json

    from helpers import run_medprobe

    monkeypatch.setenv("MEDPROBE_CLIP", str(tiny_clip))
    run_medprobe(tmp_path, "-m", "experiment=demo_compare", "experiment/demo_compare_model=clip",
                 "tracker=none", "bootstrap.n=20", "data.fingerprint=stat", "output_dir=sweep")  # fmt: skip
    runs = [json.loads(p.read_text()) for p in tmp_path.glob("sweep/*/layer_*/results.json")]
    assert sorted((r["train_fraction"], r["layer"]) for r in runs) == [
        (f, layer) for f in (0.5, 1.0) for layer in (0, 1, 2)
    ]
    assert {(r["model"], r["model_id"], r["task"]) for r in runs} == {
        ("clip", str(tiny_clip), "demo")  # the model MEDPROBE_CLIP names
    }


def test_fidelity_paper_chooses_the_authors_layer_only_under_the_paper_presets(
    compose: Compose, paths_env: Path
) -> None:
    """model=idefics80b alone keeps medprobe's 32; fidelity=paper (set by every fig* preset)
    picks hidden_states[39], the authors' "layer 32" (medprobe.paper.layers); the command line
    and figS5's layer=all still win; models without a paper file are untouched."""
    from medprobe.paper.layers import authors_to_hidden_state

    assert compose("model=idefics80b").layer == 32
    paper = compose("fidelity=paper", "model=idefics80b")
    assert paper.layer == authors_to_hidden_state(32, 80) == 39 and paper.model.layers == 39
    assert compose("fidelity=paper", "model=idefics9b").layer == 13
    assert compose("fidelity=paper", "model=clip").layer == -1
    # the authors' numerics: 8-bit weights, float16 compute (activation.py); ours stay bf16
    for m in ("idefics80b", "idefics9b"):
        pm = compose("fidelity=paper", f"model={m}").model
        assert (pm.quantization, pm.dtype) == ("8bit", "float16")
        assert (compose(f"model={m}").model.quantization, compose(f"model={m}").model.dtype) == (
            "none", "bfloat16")  # fmt: skip
    assert compose("experiment=fig3", "model=idefics80b", "layer=20").layer == 20
    assert compose("experiment=figS5", "model=idefics80b").layer == "all"
