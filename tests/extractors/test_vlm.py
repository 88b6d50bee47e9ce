"""The generic chat-template VLM extractor (``model.kind=vlm``) on tiny random models of each
family (tests/tiny_vlms.py): forward, batched = single, truncated = full, layer numbering,
text before the image, pinned prompts, poolings, cache keys, configs, memory plans, end to end.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers import Compose, small_demo
from PIL import Image
from tiny_vlms import RENDERED, WIDTH, save_tiny_vlm

from medprobe.cache import cache_key
from medprobe.errors import ConfigError, ExtractorError
from medprobe.extractors.vlm import FINAL_NORM, VISION, VLMExtractor, from_config
from medprobe.extractors.vlm.families import FAMILIES as FAMILY_TABLE
from medprobe.extractors.vlm.families import image_token_id
from medprobe.extractors.vlm.plan import MODEL_ALIASES, main, memory_plan
from medprobe.registry import EXTRACTORS

FAMILIES = [
    "llava", "llava_onevision", "qwen2_5_vl", "idefics3", "gemma3", "mllama", "paligemma",
    "internvl",
]  # fmt: skip
PROMPT = "What is shown?"
#: model config used with each family's tiny model end to end
CONFIGS = {
    "llava": "llava_onevision_7b",
    "llava_onevision": "llava_onevision_7b",
    "qwen2_5_vl": "qwen2_5_vl_7b",
    "idefics3": "idefics3_8b",
    "gemma3": "medgemma_4b",
    "mllama": "llama32_vision_11b",
    "paligemma": "paligemma2_3b",
    "internvl": "internvl3_8b",
}
#: decoder layers of each tiny language model (Mllama: 3 self- + 2 cross-attention layers)
DEPTH = {f: 5 if f == "mllama" else 4 for f in FAMILIES}


@pytest.fixture(scope="session")
def tiny_vlms(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every family's tiny random model, saved once per session."""
    root = tmp_path_factory.mktemp("tiny_vlms")
    return {f: save_tiny_vlm(f, root / f) for f in FAMILIES}


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    """Three random RGB images of different shapes (32 x 32, 32 x 48, 32 x 64 pixels)."""
    rng = np.random.default_rng(0)
    return [
        Image.fromarray(rng.integers(0, 256, (32 + 16 * i, 32, 3), dtype=np.uint8))
        for i in range(3)
    ]


def make(path: Path, **kw: Any) -> VLMExtractor:
    kw = {"dtype": "float32", "device": "cpu", "truncate": False, **kw}
    return VLMExtractor(str(path), kw.pop("prompt", PROMPT), **kw)


_FULL: dict[str, VLMExtractor] = {}


def full(tiny_vlms: dict[str, Path], fam: str) -> VLMExtractor:
    """One untruncated float32 extractor per family, loaded once."""
    if fam not in _FULL:
        _FULL[fam] = make(tiny_vlms[fam])
    return _FULL[fam]


# --------------------------------------------------------------------------- forward, batching


@pytest.mark.parametrize("fam", FAMILIES)
def test_forward_and_batched_equals_single(
    fam: str, tiny_vlms: dict[str, Path], images: list[Image.Image]
) -> None:
    ext = full(tiny_vlms, fam)
    assert ext.layers() == [*range(DEPTH[fam] + 1), FINAL_NORM, VISION]
    batch = ext.collate(images)
    assert batch["input_ids"].shape[0] == 3 and bool(batch["attention_mask"][:, -1].all())
    feats = ext.extract(batch, "all")
    assert set(feats) == set(ext.layers())
    assert all(v.shape == (3, WIDTH) and v.dtype == np.float32 for v in feats.values())
    for i, img in enumerate(images):
        one = ext.extract(ext.collate([img]), "all")
        for layer in feats:
            np.testing.assert_allclose(feats[layer][i], one[layer][0], rtol=1e-4, atol=2e-5)
    if fam in ("llava_onevision", "qwen2_5_vl", "idefics3", "internvl"):  # tiles: counts vary
        tid = image_token_id(ext.config())
        counts = (batch["input_ids"] == tid).sum(dim=1).tolist()
        assert len(set(counts)) > 1, counts


@pytest.mark.parametrize("fam", FAMILIES)
def test_truncated_equals_full_at_layer_k(
    fam: str, tiny_vlms: dict[str, Path], images: list[Image.Image]
) -> None:
    batch = full(tiny_vlms, fam).collate(images)
    want = full(tiny_vlms, fam).extract(batch, [2, VISION])
    trunc = make(tiny_vlms[fam], truncate=True)
    got = trunc.extract(batch, [2, VISION])
    for layer in (2, VISION):
        np.testing.assert_array_equal(got[layer], want[layer])
    info = trunc.load_info()
    assert (info["kept_depth"], info["num_hidden_layers"], info["truncated"]) == (
        2, DEPTH[fam], True,
    )  # fmt: skip
    assert info["params_loaded"] < full(tiny_vlms, fam).load_info()["params_loaded"]
    # a deeper request reloads deep enough; the fingerprint does not depend on truncation
    assert trunc.extract(batch, [3])[3].shape == (3, WIDTH) and trunc.load_info()["kept_depth"] == 3
    assert trunc.fingerprint() == full(tiny_vlms, fam).fingerprint()


def _decoder_layers(ext: VLMExtractor) -> Any:
    from medprobe.extractors.vlm.plan import language_model

    return language_model(ext.load()).layers


@pytest.mark.parametrize("fam", FAMILIES)
def test_layer_k_is_the_output_of_decoder_layer_k_unnormed(
    fam: str, tiny_vlms: dict[str, Path], images: list[Image.Image]
) -> None:
    """Layer k = the output of the k-th decoder layer (Mllama: cross-attention layers count);
    layer N is not normed (tie_last_hidden_states=False on text_config); final_norm is."""
    ext = full(tiny_vlms, fam)
    layers = _decoder_layers(ext)
    assert len(layers) == DEPTH[fam]
    if fam == "mllama":
        kinds = [type(m).__name__ for m in layers]
        assert [i for i, k in enumerate(kinds) if "Cross" in k] == [1, 3], kinds
    outs: list[torch.Tensor] = []
    hooks = [
        m.register_forward_hook(lambda _m, _a, o: outs.append(o[0] if isinstance(o, tuple) else o))
        for m in layers
    ]
    try:
        states, _ = ext.hidden_states(ext.collate(images[:2]), "all")
    finally:
        for h in hooks:
            h.remove()
    assert len(outs) == DEPTH[fam]
    for k in range(1, DEPTH[fam] + 1):
        torch.testing.assert_close(states[k], outs[k - 1], rtol=0, atol=0)
    norm = ext.load().model
    norm = getattr(norm, "language_model", None) or norm.text_model
    torch.testing.assert_close(states[FINAL_NORM], norm.norm(states[DEPTH[fam]]))
    assert not torch.allclose(states[FINAL_NORM], states[DEPTH[fam]])


@pytest.mark.parametrize("fam", [f for f in FAMILIES if f != "paligemma"])
def test_text_before_the_image_does_not_see_it(fam: str, tiny_vlms: dict[str, Path]) -> None:
    """Positions before the first image token are the same whatever the image where the family
    promises it (PaliGemma, a prefix-LM with the image first, promises no such thing). In
    transformers' Mllama they are not: a text row without image in its cross-attention mask
    attends uniformly to every image token (only its MLP output is masked); pinned here so
    that a fix upstream shows."""
    ext = make(tiny_vlms[fam], prompt="Look at this: {image} What is shown?")
    rng = np.random.default_rng(1)
    a, b = (Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(2))
    sa, ia = ext.hidden_states(ext.collate([a]), "all")
    sb, ib = ext.hidden_states(ext.collate([b]), "all")
    assert torch.equal(ia["input_ids"], ib["input_ids"])
    first = int((ia["input_ids"][0] == image_token_id(ext.config())).nonzero()[0])
    text = ext.processor().tokenizer.decode(ia["input_ids"][0, :first])
    assert "Look at this:" in text
    if FAMILY_TABLE[fam].causal_before_image:
        for k in range(DEPTH[fam] + 1):
            torch.testing.assert_close(sa[k][:, :first], sb[k][:, :first], rtol=0, atol=0)
    else:  # Mllama: equal up to the first cross-attention layer (layer 2), not after it
        torch.testing.assert_close(sa[1][:, :first], sb[1][:, :first], rtol=0, atol=0)
        assert not torch.allclose(sa[2][:, :first], sb[2][:, :first])
    assert not torch.allclose(sa[DEPTH[fam]][:, -1], sb[DEPTH[fam]][:, -1])


@pytest.mark.parametrize("device_map", ["cuda:0", "cuda", 0, {"": "cuda:1"}])
def test_a_gpu_device_map_without_cuda_says_so(
    device_map: Any, tiny_vlms: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """model.device_map=cuda:0 on a machine without CUDA was reported as "cannot load the VLM
    weights (offline and not in the HF cache? a typo?): RuntimeError: Found no NVIDIA driver"."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    ext = make(tiny_vlms["llava"], device_map=device_map)
    with pytest.raises(ExtractorError) as e:
        ext.from_pretrained_kwargs()
    assert str(e.value) == (
        f"vlm: model.device_map={device_map} places the model on a GPU but CUDA is not "
        "available here; use model.device_map=cpu (or auto)"
    )
    for fine in ("auto", "cpu", "balanced", {"": "cpu"}):
        assert make(tiny_vlms["llava"], device_map=fine).from_pretrained_kwargs()["device_map"]


@pytest.mark.parametrize("quantization", ["4bit", "8bit"])
def test_quantized_on_cpu_is_placed_not_moved_and_close_to_float32(
    quantization: str, tiny_vlms: dict[str, Path], images: list[Image.Image],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """bitsandbytes through the shared base (HFExtractor.from_pretrained_kwargs): the Linear
    layers are quantised, the model is placed by device_map and never moved."""
    from transformers import LlavaForConditionalGeneration

    def no_move(self: object, *a: object, **k: object) -> None:
        raise AssertionError("a quantised model must not be moved with .to()")

    batch = full(tiny_vlms, "llava").collate(images[:2])
    ref = full(tiny_vlms, "llava").extract(batch, [2, VISION])
    monkeypatch.setattr(LlavaForConditionalGeneration, "to", no_move)
    q = make(tiny_vlms["llava"], quantization=quantization, truncate=True)
    got = q.extract(batch, [2, VISION])
    for layer in (2, VISION):
        assert np.corrcoef(got[layer].ravel(), ref[layer].ravel())[0, 1] > 0.95
        assert not np.array_equal(got[layer], ref[layer])  # really quantised
    name = {"4bit": "Linear4bit", "8bit": "Linear8bitLt"}[quantization]
    assert type(q.load().model.language_model.layers[0].mlp.down_proj).__name__ == name
    info = q.load_info()
    assert (info["quantization"], info["kept_depth"], info["device_type"]) == (
        quantization,
        2,
        "cpu",
    )
    assert q.fingerprint()["quantization"] == q.quantization_settings() is not None
    assert cache_key(q.fingerprint()) != cache_key(full(tiny_vlms, "llava").fingerprint())


def test_vision_layer_is_the_projected_image_features(
    tiny_vlms: dict[str, Path], images: list[Image.Image]
) -> None:
    """LLaVA: "vision" = the mean of get_image_features (vision tower layer -2, CLS dropped,
    MLP projector), the features the language model reads."""
    ext = full(tiny_vlms, "llava")
    batch = ext.collate(images)
    with torch.inference_mode():
        feats = ext.load().model.get_image_features(pixel_values=batch["pixel_values"])
    want = torch.stack([f.mean(dim=0) for f in feats.pooler_output]).numpy()
    np.testing.assert_allclose(ext.extract(batch, [VISION])[VISION], want, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- prompt, pooling


@pytest.mark.parametrize("fam", FAMILIES)
def test_the_rendered_prompt_is_pinned(fam: str, tiny_vlms: dict[str, Path]) -> None:
    ext = make(tiny_vlms[fam])
    assert ext.rendered_prompt() == RENDERED[fam]
    assert ext.fingerprint()["rendered_prompt"] == RENDERED[fam]


def test_the_default_system_prompt_is_recorded_and_replaceable(tiny_vlms: dict[str, Path]) -> None:
    qwen = make(tiny_vlms["qwen2_5_vl"])
    assert "You are a helpful assistant." in qwen.fingerprint()["rendered_prompt"]
    own = make(tiny_vlms["qwen2_5_vl"], system_prompt="You are a radiologist.")
    assert own.rendered_prompt() == RENDERED["qwen2_5_vl"].replace(
        "You are a helpful assistant.", "You are a radiologist."
    )
    assert cache_key(own.fingerprint()) != cache_key(qwen.fingerprint())
    llava = make(tiny_vlms["llava"], system_prompt="Be brief.")
    assert llava.rendered_prompt() == "Be brief. " + RENDERED["llava"]


#: the tokens pooling=mean_after_image averages, decoded (the image's closing markers skipped)
AFTER_IMAGE = {
    "llava": "\nWhat is shown? ASSISTANT:",
    "llava_onevision": "\nWhat is shown? ASSISTANT:",
    "qwen2_5_vl": "What is shown?<|im_end|>\n<|im_start|>assistant\n",
    "idefics3": "What is shown?<end_of_utterance>\nAssistant:",
    "gemma3": "\n\nWhat is shown?<end_of_turn>\n<start_of_turn>model\n",
    "mllama": "What is shown?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
    "paligemma": "<s>What is shown?\n",
    "internvl": "\nWhat is shown?<|im_end|>\n<|im_start|>assistant\n",
}
#: image tokens of a 32 x 32 image
N_IMAGE_TOKENS = {
    "llava": 16,
    "llava_onevision": 36,  # base view 16 + one 4 x 4 crop 16 + a newline per crop row 4
    "qwen2_5_vl": 4,
    "idefics3": 20,
    "gemma3": 4,
    "paligemma": 16,
    "internvl": 4,
}


@pytest.mark.parametrize("fam", FAMILIES)
def test_poolings(fam: str, tiny_vlms: dict[str, Path], images: list[Image.Image]) -> None:
    batch = full(tiny_vlms, fam).collate(images[:1])
    ids, mask = batch["input_ids"], batch["attention_mask"]
    tok = full(tiny_vlms, fam).processor().tokenizer
    after = make(tiny_vlms[fam], pooling="mean_after_image").pool_weights(ids, mask)[0]
    assert tok.decode(ids[0][after > 0]) == AFTER_IMAGE[fam]
    last = make(tiny_vlms[fam]).pool_weights(ids, mask)[0]
    assert int(last.argmax()) == ids.shape[1] - 1 and float(last.sum()) == 1.0
    if fam == "mllama":  # no image tokens in the text stream
        with pytest.raises(ExtractorError, match="pooling=mean_image needs image tokens"):
            make(tiny_vlms[fam], pooling="mean_image").layers()
        return
    img = make(tiny_vlms[fam], pooling="mean_image").pool_weights(ids, mask)[0]
    assert int((img > 0).sum()) == N_IMAGE_TOKENS[fam]
    assert bool((ids[0][img > 0] == image_token_id(full(tiny_vlms, fam).config())).all())
    # "vision" = the image features the language model reads, mean over them
    feats = full(tiny_vlms, fam).extract(batch, [0, VISION])
    states, _ = full(tiny_vlms, fam).hidden_states(batch, [0])
    want = states[0][0][img > 0].mean(dim=0).numpy()
    np.testing.assert_allclose(feats[VISION][0], want, rtol=1e-5, atol=1e-6)


def test_mean_after_image_needs_text_after_the_image(tiny_vlms: dict[str, Path]) -> None:
    ext = make(tiny_vlms["paligemma"], prompt="", pooling="mean_after_image")
    batch = ext.collate([Image.new("RGB", (32, 32))])
    assert ext.extract(batch, [1])[1].shape == (1, WIDTH)  # "<bos>\n" follows the image
    with pytest.raises(ExtractorError, match="one image per prompt"):
        make(tiny_vlms["llava"], prompt="{image} and {image}")


# --------------------------------------------------------------------------- cache keys


def _hub(tmp: Path, src: Path, commit: str, edit: Any = None) -> None:
    repo = tmp / "hub" / "models--acme--tiny-vlm"
    shutil.copytree(src, repo / "snapshots" / commit)
    if edit is not None:
        edit(repo / "snapshots" / commit)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)


def _new_template(d: Path) -> None:
    p = d / "chat_template.jinja"
    p.write_text(p.read_text() + "{% if add_generation_prompt %} {% endif %}")


def _new_mean(d: Path) -> None:
    p = d / "processor_config.json"
    cfg = json.loads(p.read_text())
    cfg["image_processor"]["image_mean"] = [0.25, 0.25, 0.25]
    p.write_text(json.dumps(cfg))


@pytest.mark.parametrize("fam", FAMILIES)
def test_cache_key_follows_revision_template_and_processor_settings(
    fam: str, tiny_vlms: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hub checkpoint is fingerprinted by its resolved commit, chat template and processor
    settings (no file digests): each change moves the cache key."""
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    fps: dict[str, dict[str, Any]] = {}
    edits = {"a" * 40: None, "b" * 40: None, "c" * 40: _new_template, "d" * 40: _new_mean}
    if fam == "paligemma":  # no chat template
        del edits["c" * 40]
    for commit, edit in edits.items():
        _hub(tmp_path, tiny_vlms[fam], commit, edit)
        ext = VLMExtractor("acme/tiny-vlm", PROMPT, dtype="float32")
        fps[commit] = ext.fingerprint()
        assert fps[commit]["resolved_revision"] == commit and "files" not in fps[commit]
    a, b = fps["a" * 40], fps["b" * 40]
    assert {k for k in a if a[k] != b[k]} == {"resolved_revision"}
    if fam != "paligemma":
        c = fps["c" * 40]
        assert {k for k in a if a[k] != c[k]} == {
            "resolved_revision",
            "chat_template",
            "rendered_prompt",
        }
    else:
        assert a["chat_template"] is None
    d = fps["d" * 40]
    assert {k for k in a if a[k] != d[k]} == {"resolved_revision", "processor"}
    assert d["processor"]["settings"]["image_processor"]["image_mean"] == [0.25, 0.25, 0.25]
    keys = {cache_key(fp) for fp in fps.values()}
    assert len(keys) == len(fps)
    # options that change the features change the key; placement and truncation do not
    local = make(tiny_vlms[fam])
    base = cache_key(local.fingerprint())
    for kw in ({"pooling": "mean_after_image"}, {"prompt": "Describe."}, {"dtype": "bfloat16"},
               {"system_prompt": "Be brief."}):  # fmt: skip
        assert cache_key(make(tiny_vlms[fam], **kw).fingerprint()) != base, kw
    same = make(tiny_vlms[fam], truncate=True, device_map="cpu", device="cpu")
    assert cache_key(same.fingerprint()) == base


def test_processor_kwargs_enter_the_key_and_the_processor(
    tiny_vlms: dict[str, Path], images: list[Image.Image]
) -> None:
    split = make(tiny_vlms["idefics3"])
    whole = make(tiny_vlms["idefics3"], processor_kwargs={"do_image_splitting": False})
    assert whole.fingerprint()["processor"]["processor_kwargs"] == {"do_image_splitting": False}
    assert cache_key(whole.fingerprint()) != cache_key(split.fingerprint())
    tid = image_token_id(split.config())
    n_split = int((split.collate(images[2:])["input_ids"] == tid).sum())
    n_whole = int((whole.collate(images[2:])["input_ids"] == tid).sum())
    assert (n_split, n_whole) == (12, 4)  # 2 tiles + the global view vs the global view


# --------------------------------------------------------------------------- configs, plans


#: conf/model name -> parameters stated on the model card (billions)
CARD_PARAMS = {
    "qwen2_5_vl_7b": 8.29, "medgemma_4b": 4.30, "llava_onevision_7b": 8.03, "idefics3_8b": 8.46,
    "smolvlm_2b": 2.25, "llama32_vision_11b": 10.67, "paligemma2_3b": 3.03, "internvl3_8b": 7.94,
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(MODEL_ALIASES))
def test_model_configs_compose_and_plan_without_download(
    name: str, compose: Compose, capsys: pytest.CaptureFixture[str]
) -> None:
    from medprobe.config.validate import to_typed

    cfg = to_typed(compose(f"model={name}", "prompt=general"))
    assert (cfg.model.name, cfg.model.kind, cfg.model.hf_id) == (name, "vlm", MODEL_ALIASES[name])
    assert str(cfg.model.dtype) == "bfloat16" and cfg.model.layers == cfg.layer
    plan = memory_plan(name, cfg.layer)
    # the default layer is 0.4 of the depth (the paper's IDEFICS-80B layer 32 of 80)
    assert cfg.layer == round(0.4 * plan["depth_full"]) == plan["depth_truncated"]
    assert plan["params_full"] / 1e9 == pytest.approx(CARD_PARAMS[name], abs=0.006)
    gb = {r["quantization"]: r for r in plan["rows"]}
    assert gb["none"]["gb_full"] == pytest.approx(2 * plan["params_full"] / 1e9)
    assert gb["4bit"]["gb_truncated"] < gb["8bit"]["gb_truncated"] < gb["none"]["gb_truncated"]
    ext = EXTRACTORS.get(cfg.model.kind)(cfg.model, cfg.prompt.text)  # no weights, no download
    assert isinstance(ext, VLMExtractor) and ext.prompt == cfg.prompt.text
    assert main([f"model={name}"]) == 0
    out = capsys.readouterr().out
    assert f"{MODEL_ALIASES[name]} (" in out and f"layer {cfg.layer}:" in out


def test_plan_command_line(tiny_vlms: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["model=qwen2_5_vl_7b", "layer=final_norm"]) == 0
    out = capsys.readouterr().out
    assert "none              16.6       16.6  28/28" in out
    assert main(["model=llama32_vision_11b", f"model.hf_id={tiny_vlms['mllama']}", "layer=2"]) == 0
    assert "2 of 5 decoder layers" in capsys.readouterr().out
    assert main(["model=idefics80b"]) == 0
    assert "none             159.9       65.5  32/80" in capsys.readouterr().out
    with pytest.raises(ExtractorError, match="no published config for 'acme/none'"):
        main(["model=medgemma_4b", "model.hf_id=acme/none"])  # offline, not cached
    with pytest.raises(ConfigError, match="kind clip"):
        main(["model=clip"])
    with pytest.raises(ConfigError, match="model=, layer= and model.hf_id="):
        main(["model=medgemma_4b", "--max-memory", "0=8GiB"])


def test_from_config_reads_the_model_node(compose: Compose, tiny_vlms: dict[str, Path]) -> None:
    node = compose(
        "model=qwen2_5_vl_7b", f"model.hf_id={tiny_vlms['qwen2_5_vl']}", "model.dtype=float32",
        "model.pooling=mean_image", "model.system_prompt=Be brief.", "+model.processor_kwargs.x=1",
    ).model  # fmt: skip
    ext = from_config(node, "Q?")
    assert (ext.pooling, ext.system_prompt, ext.processor_kwargs, ext.prompt) == (
        "mean_image", "Be brief.", {"x": 1}, "Q?",
    )  # fmt: skip
    with pytest.raises(ExtractorError, match="local model directory not found"):
        from_config(compose("model=medgemma_4b", "model.hf_id=/nope/x").model, "Q?")


# --------------------------------------------------------------------------- end to end


@pytest.mark.parametrize("fam", FAMILIES)
def test_run_task_demo_end_to_end(
    fam: str, compose: Compose, tiny_vlms: dict[str, Path], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """``medprobe run model=<config> model.hf_id=<tiny> task=demo`` in process, on 81 demo
    images (3 per class and split)."""
    from medprobe.pipeline.run import run
    from medprobe.registry import TASKS

    monkeypatch.setitem(TASKS._loaded, "demo", small_demo())
    name = CONFIGS[fam]
    cfg = compose(
        f"model={name}", f"model.hf_id={tiny_vlms[fam]}", "model.dtype=float32",
        "model.num_workers=0", "model.batch_size=16", "task=demo", "prompt=pathology",
        "layer=2", "tracker=none", "progress=false", "bootstrap.n=20",
        f"output_dir={tmp_path / 'out'}", f"cache_dir={tmp_path / 'cache'}",
    )  # fmt: skip
    run(cfg)
    r = json.loads((tmp_path / "out" / "results.json").read_text())
    assert (r["model"], r["model_kind"], r["task"], r["layer"]) == (name, "vlm", "demo", 2)
    assert r["counts"]["feature_dim"] == WIDTH
    assert sum(r["counts"][k] for k in ("fit", "val", "test")) == 81
    assert r["extractor"]["rendered_prompt"].count("histological picture?") == 1
    assert r["extractor_load"]["kept_depth"] == 2 and r["extractor_load"]["truncated"] is True


@pytest.mark.slow
@pytest.mark.parametrize("fam", FAMILIES)
def test_python_m_medprobe_task_demo_full(
    fam: str, tiny_vlms: dict[str, Path], tmp_path: Path
) -> None:
    """The command a user types, on the whole demo set (718 images; about 1 min per family)."""
    import subprocess

    from helpers import isolated_env

    proc = subprocess.run(
        [sys.executable, "-m", "medprobe", f"model={CONFIGS[fam]}", f"model.hf_id={tiny_vlms[fam]}",
         "model.dtype=float32", "task=demo", "layer=1", "tracker=none", "progress=false",
         "bootstrap.n=20", "output_dir=out"],
        cwd=tmp_path, env=isolated_env(tmp_path), capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads((tmp_path / "out" / "results.json").read_text())
    assert (r["model"], r["model_kind"], r["layer"]) == (CONFIGS[fam], "vlm", 1)
    assert sum(r["counts"][k] for k in ("fit", "val", "test")) == 718
