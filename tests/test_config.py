"""Every model x task config composes (no weights loaded); typos fail at compose time."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import OmegaConf

from medprobe.config import ConfigError, conf_dir, register_configs, validate
from medprobe.registry import EXTRACTORS, PROBES, TASKS, Registry, RegistryError

register_configs()
CONF = conf_dir()
MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))
TASK_FILES = sorted(p.stem for p in (CONF / "task").glob("*.yaml"))


def _compose(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def test_conf_dir_is_the_repo_conf() -> None:
    assert CONF == Path(__file__).resolve().parents[1] / "conf"
    assert {"effnet_lite0", "clip", "plip"} <= set(MODELS)
    assert {"demo", "csv"} <= set(TASK_FILES)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("task", TASK_FILES)
def test_every_model_task_composes_and_validates(model: str, task: str) -> None:
    cfg = _compose(f"model={model}", f"task={task}", "data_root=/data")
    validate(cfg)
    assert cfg.model.kind in EXTRACTORS
    assert cfg.task.kind in TASKS
    # a model group may set the probed layer (# @package _global_): the paper's IDEFICS layers
    assert OmegaConf.select(cfg, "layer") == {"idefics80b": 32, "idefics9b": 13}.get(model, -1)
    if task == "csv":
        assert cfg.task.root == "/data"


def test_defaults_are_the_embedded_demo() -> None:
    cfg = _compose()
    assert (cfg.model.name, cfg.task.name, cfg.probe.name, cfg.tracker.name) == (
        "effnet_lite0",
        "demo",
        "logistic",
        "wandb",
    )
    assert cfg.bootstrap.n == 1000 and cfg.bootstrap.ci == 0.95
    assert cfg.model.layers == "all"
    assert cfg.data.on_error.value == "stop"


def test_plip_is_clip_with_plip_weights() -> None:
    cfg = _compose("model=plip")
    assert (cfg.model.name, cfg.model.kind, cfg.model.hf_id) == ("plip", "clip", "vinid/plip")


def test_misspelled_key_fails_at_compose_time() -> None:
    with pytest.raises(ConfigCompositionException, match="modle"):
        _compose("modle=clip")
    with pytest.raises(ConfigCompositionException, match="batchsize"):
        _compose("model.batchsize=3")


def test_unknown_option_names_valid_choices() -> None:
    with pytest.raises(MissingConfigException) as e:
        _compose("model=clipp")
    assert "clip" in str(e.value.options) or "clip" in str(e.value)


def test_enum_value_checked() -> None:
    with pytest.raises(ConfigCompositionException) as e:
        _compose("data.on_error=ignore")
    assert "stop, skip" in str(e.value.__cause__)


def test_validate_range_and_registry_names() -> None:
    with pytest.raises(ConfigError, match="train_fraction"):
        validate(_compose("train_fraction=0"))
    with pytest.raises(RegistryError, match="Did you mean 'effnet_lite0'"):
        validate(_compose("model.kind=effnet_lite"))


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
