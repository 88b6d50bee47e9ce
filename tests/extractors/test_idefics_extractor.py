"""IdeficsExtractor on tiny random IDEFICS models: prompts, layers, pooling, batching, truncation.

(Prompt rendering alone: test_idefics_prompt.py; memory arithmetic: test_idefics_memory.py;
placement: test_idefics_placement.py; the plan command line: test_idefics_plan.py.)

The tiny model (tests/tiny_models.py) has 8 decoder blocks with a gated cross-attention block
every 2, a perceiver, qk norms and open gates (``alpha_initializer="ones"``, so the image
matters). Reference values come from direct transformers calls.
"""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import copy
import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import Compose, isolated_env
from PIL import Image
from test_idefics_prompt import GENERAL, GENERAL_RENDERED, PATHOLOGY, PRESETS
from transformers import AutoConfig, AutoProcessor, IdeficsForVisionText2Text

from medprobe.errors import ExtractorError
from medprobe.extractors.idefics import (
    CODE_VERSION,
    IdeficsExtractor,
    count_parameters,
    from_config,
    interleave,
    kept_depth,
)
from medprobe.registry import EXTRACTORS

FAKE = "<fake_token_around_image>"
N_LAYERS, INTERVAL, WIDTH = 8, 2, 64
# bitsandbytes (imported for the 4-bit path) uses torch.jit.script_method, deprecated in torch 2.13
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated")


@pytest.fixture(scope="module")
def ext(tiny_idefics: Path) -> IdeficsExtractor:
    return IdeficsExtractor(
        str(tiny_idefics), GENERAL, dtype="float32", device="cpu", truncate=False
    )


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    rng = np.random.default_rng(7)
    return [
        Image.fromarray(rng.integers(0, 256, (40 + 7 * i, 48, 3), dtype=np.uint8)) for i in range(3)
    ]


@pytest.fixture(scope="module")
def pixels(ext: IdeficsExtractor, images: list[Image.Image]) -> torch.Tensor:
    return torch.stack([ext.preprocess(im) for im in images])


@pytest.fixture(scope="module")
def reference(tiny_idefics: Path) -> IdeficsForVisionText2Text:
    """The full tiny model with block N's output un-normed (``tie_last_hidden_states=False``)."""
    cfg = AutoConfig.from_pretrained(tiny_idefics)
    cfg.tie_last_hidden_states = False
    return IdeficsForVisionText2Text.from_pretrained(tiny_idefics, config=cfg).eval()


def _pil_processor(tiny_idefics: Path) -> Any:
    """The checkpoint's processor with the PIL image backend, the one the extractor pins (with
    torchvision installed transformers picks its torchvision backend, which resizes otherwise)."""
    return AutoProcessor.from_pretrained(tiny_idefics, backend="pil")


def _processor_inputs(tiny_idefics: Path, templates: list[str], imgs: list[Image.Image]) -> dict:
    proc = _pil_processor(tiny_idefics)
    proc.tokenizer.padding_side = "left"
    return proc(
        text=[interleave(t, im) for t, im in zip(templates, imgs, strict=True)],
        add_end_of_utterance_token=False,
        return_tensors="pt",
    )


# ------------------------------------------------------------------------------- prompts


def test_rendering_tokenises_exactly_like_the_idefics_processor(
    tiny_idefics: Path, ext: IdeficsExtractor, images: list[Image.Image]
) -> None:
    proc = _pil_processor(tiny_idefics)
    eou = proc.tokenizer.convert_tokens_to_ids("<end_of_utterance>")
    for text in PRESETS.values():
        want = _processor_inputs(tiny_idefics, [text], images[:1])
        got = ext.encode([text])
        for key in ("input_ids", "attention_mask", "image_attention_mask"):
            assert torch.equal(got[key], want[key]), key
        assert int((got["input_ids"] == eou).sum()) == 1  # one end of utterance, before Assistant
        # the processor's own end-of-utterance insertion agrees (no two text items in a row)
        alt = proc(text=[interleave(text, images[0])], add_end_of_utterance_token=True)
        assert torch.equal(alt["input_ids"], want["input_ids"])
    # a batch of different prompts: left padded exactly as the processor pads it
    both = [GENERAL, PATHOLOGY]
    want = _processor_inputs(tiny_idefics, both, images[:2])
    got = ext.encode(both)
    for key in ("input_ids", "attention_mask", "image_attention_mask"):
        assert torch.equal(got[key], want[key]), key
    assert got["attention_mask"][0, 0] == 0 and got["attention_mask"][:, -1].tolist() == [1, 1]
    # the fingerprint (cache key) and results carry the exact rendered text
    assert ext.fingerprint()["rendered_prompt"] == GENERAL_RENDERED


def test_plain_format_tokenises_like_the_authors_processor_call(
    tiny_idefics: Path, ext: IdeficsExtractor, images: list[Image.Image]
) -> None:
    """prompt_format=plain: the ids equal IdeficsProcessor on the authors' [image, text] (their
    activation.py), with the processor's defaults; the pooled last token is ":" of "Answer:";
    the fingerprint says plain, the chat fingerprint carries no prompt_format key (its cache
    keys are unchanged)."""
    plain = IdeficsExtractor(str(tiny_idefics), GENERAL, dtype="float32", device="cpu",
                             truncate=False, prompt_format="plain")  # fmt: skip
    proc = _pil_processor(tiny_idefics)
    for text in PRESETS.values():
        want = proc(text=[[images[0], text]], return_tensors="pt")
        got = plain.encode([text])
        for key in ("input_ids", "attention_mask", "image_attention_mask"):
            assert torch.equal(got[key], want[key]), key
        assert proc.tokenizer.decode(got["input_ids"][0, -1:]).strip() == ":"
        assert proc.tokenizer.decode(got["input_ids"][0]).endswith(f"{FAKE}{text}")
    fp = plain.fingerprint()
    assert fp["prompt_format"] == "plain" and fp["rendered_prompt"] == (
        f"<s>{FAKE}<image>{FAKE}{GENERAL}"
    )
    assert "prompt_format" not in ext.fingerprint()


def test_text_before_the_image_does_not_see_the_image(
    ext: IdeficsExtractor, pixels: torch.Tensor
) -> None:
    states, enc = ext.hidden_states(pixels[:2], [0, 4, N_LAYERS])
    ids = enc["input_ids"][0]
    first_fake = int((ids == ext.processor().tokenizer.convert_tokens_to_ids(FAKE)).nonzero()[0])
    assert first_fake == 6  # <s> U s e r :
    for layer, hs in states.items():
        # identical prompt, different images: "<s>User:" is unchanged bit for bit...
        assert torch.equal(hs[0, :first_fake], hs[1, :first_fake]), layer
        # ...while every token after the image differs
        diff = (hs[0, first_fake + 2 :] - hs[1, first_fake + 2 :]).abs().amax(dim=-1)
        assert bool((diff > 1e-4).all()), layer
    assert torch.equal(
        enc["image_attention_mask"][0, :, 0], (torch.arange(ids.numel()) > first_fake).long()
    )


# ------------------------------------------------------------------------ layers, pooling


def test_features_equal_direct_transformers_calls(
    ext: IdeficsExtractor,
    reference: IdeficsForVisionText2Text,
    tiny_idefics: Path,
    images: list[Image.Image],
    pixels: torch.Tensor,
) -> None:
    assert ext.layers() == [*range(N_LAYERS + 1), "final_norm"]
    feats = ext.extract(pixels, [-1, 0, 4, "final_norm"])
    assert list(feats) == [0, 4, N_LAYERS, "final_norm"]
    inputs = _processor_inputs(tiny_idefics, [GENERAL] * 3, images)
    assert torch.equal(inputs["pixel_values"][:, 0], pixels)  # preprocess == the processor
    with torch.inference_mode():
        out = reference.model(**inputs, output_hidden_states=True, use_cache=False)
    assert len(out.hidden_states) == N_LAYERS + 1
    for layer in (0, 4, N_LAYERS):
        want = out.hidden_states[layer][:, -1].numpy()  # no padding: the last position
        assert feats[layer].dtype == np.float32 and feats[layer].shape == (3, WIDTH)
        np.testing.assert_allclose(feats[layer], want, atol=1e-5, rtol=0)
    # layer N is block N's raw output; "final_norm" is the RMSNorm of it (what lm_head reads)
    np.testing.assert_allclose(feats["final_norm"], out.last_hidden_state[:, -1], atol=1e-5)
    normed = reference.model.norm(torch.from_numpy(feats[N_LAYERS])).detach().numpy()
    np.testing.assert_allclose(feats["final_norm"], normed, atol=1e-5)
    assert not np.allclose(feats[N_LAYERS], feats["final_norm"], atol=1e-2)


def test_mean_after_image_and_image_latents_pooling(
    tiny_idefics: Path,
    reference: IdeficsForVisionText2Text,
    images: list[Image.Image],
    pixels: torch.Tensor,
) -> None:
    mean = IdeficsExtractor(str(tiny_idefics), GENERAL, dtype="float32", pooling="mean_after_image")
    feats = mean.extract(pixels, [2, 5])
    inputs = _processor_inputs(tiny_idefics, [GENERAL] * 3, images)
    ids = inputs["input_ids"][0]
    start = int((ids == mean.processor().tokenizer.convert_tokens_to_ids("<image>")).nonzero()) + 2
    with torch.inference_mode():
        out = reference.model(**inputs, output_hidden_states=True, use_cache=False)
        lat = reference.model.perceiver_resampler(
            reference.model.vision_model(pixel_values=pixels).last_hidden_state
        )
    for layer in (2, 5):
        want = out.hidden_states[layer][:, start:].mean(dim=1).numpy()  # the question's tokens
        np.testing.assert_allclose(feats[layer], want, atol=1e-5, rtol=0)
    lat_ext = IdeficsExtractor(str(tiny_idefics), GENERAL, dtype="float32", pooling="image_latents")
    assert lat_ext.layers() == ["image_latents"]
    got = lat_ext.extract(pixels, "all")["image_latents"]
    np.testing.assert_allclose(got, lat.mean(dim=1).numpy(), atol=1e-5, rtol=0)
    info = lat_ext.load_info()
    assert info["kept_depth"] == 0 and info["params_loaded"] < info["params_full"] / 2
    with pytest.raises(ExtractorError, match=r"unknown layer 3; valid layers: \['image_latents'\]"):
        lat_ext.extract(pixels, [3])


def test_sample_alone_equals_sample_in_a_left_padded_batch(
    ext: IdeficsExtractor, pixels: torch.Tensor
) -> None:
    mixed = [GENERAL, PATHOLOGY, "{image}Describe."]
    enc = ext.encode(mixed)
    assert (enc["attention_mask"] == 0).any(dim=1).tolist() == [True, False, True]  # padded
    batch = ext.extract(pixels, "all", prompts=mixed)
    for i in range(3):
        alone = ext.extract(pixels[i : i + 1], "all", prompts=[mixed[i]])
        for layer, arr in alone.items():
            np.testing.assert_allclose(arr[0], batch[layer][i], atol=2e-5, rtol=0)
    # mask.sum() - 1 would point into the question for a left-padded row; we use position T-1
    assert int(enc["attention_mask"][0].sum()) - 1 < enc["attention_mask"].shape[1] - 1
    mean = IdeficsExtractor(ext.hf_id, GENERAL, dtype="float32", pooling="mean_after_image")
    batch = mean.extract(pixels, [3], prompts=mixed)
    alone = mean.extract(pixels[:1], [3], prompts=mixed[:1])
    np.testing.assert_allclose(alone[3][0], batch[3][0], atol=2e-5, rtol=0)


# ------------------------------------------------------------------------------ loading


def test_truncated_load_equals_full_model_and_records_parameters(
    tiny_idefics: Path, ext: IdeficsExtractor, pixels: torch.Tensor
) -> None:
    assert kept_depth([3], N_LAYERS, INTERVAL) == 4
    assert kept_depth([0], N_LAYERS, INTERVAL) == 2  # layer 0 is read at block 1's input
    assert kept_depth([4, 1], N_LAYERS, INTERVAL) == 4
    assert kept_depth([7, "final_norm"], N_LAYERS, INTERVAL) == N_LAYERS
    assert kept_depth(["image_latents"], N_LAYERS, INTERVAL) == 0
    assert kept_depth([32], 80, 4) == 32 and kept_depth([13], 32, 4) == 16
    trunc = IdeficsExtractor(str(tiny_idefics), GENERAL, dtype="float32", device="cpu")
    full = ext.extract(pixels, [0, 1, 3])
    got = trunc.extract(pixels, [0, 1, 3])
    for layer in (0, 1, 3):
        np.testing.assert_array_equal(got[layer], full[layer])  # bit for bit, no final norm
    info = trunc.load_info()
    cfg = AutoConfig.from_pretrained(tiny_idefics)
    assert info["loaded"] and info["truncated"] and info["kept_depth"] == 4
    assert info["num_hidden_layers"] == N_LAYERS and info["cross_layer_interval"] == INTERVAL
    assert info["params_loaded"] == count_parameters(cfg, 4)["total"]
    assert info["params_full"] == count_parameters(cfg)["total"] == ext.load_info()["params_loaded"]
    assert info["params_loaded"] < 0.75 * info["params_full"]
    assert (
        len(trunc.load([3]).model.layers) == 4
        and len(trunc.load([3]).model.gated_cross_attn_layers) == 2
    )
    assert info["devices"] == ["cpu"] and info["quantization"] == "none"
    assert info["unused_checkpoint_entries"] == 0  # every skipped weight is a dropped block
    # a deeper request reloads deeper
    trunc.extract(pixels[:1], [6])
    assert trunc.load_info()["kept_depth"] == 6


def test_loading_check_explains_every_skipped_checkpoint_weight() -> None:
    check = IdeficsExtractor._check_loading_info
    truncated = {
        "missing_keys": set(),
        "unexpected_keys": [
            "model.layers.4.mlp.up_proj.weight",
            "model.layers.7.self_attn.q_proj.weight",
            "model.gated_cross_attn_layers.2.alpha_dense",
            "model.layers.1.self_attn.rotary_emb.inv_freq",  # an old persisted buffer
        ],
    }
    assert check(truncated, 4, 2) == ["model.layers.1.self_attn.rotary_emb.inv_freq"]
    assert check({"missing_keys": {"lm_head.additional_fc.weight"}}, 4, 2) == []  # unused
    with pytest.raises(ExtractorError, match="would be random.*model.layers.0.mlp.up_proj"):
        check({"missing_keys": {"model.layers.0.mlp.up_proj.weight"}}, 4, 2)


def test_4bit_on_cpu_is_placed_not_moved_and_close_to_float32(
    tiny_idefics: Path, ext: IdeficsExtractor, pixels: torch.Tensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_move(self: object, *a: object, **k: object) -> None:
        raise AssertionError("a quantised model must not be moved with .to()")

    monkeypatch.setattr(IdeficsForVisionText2Text, "to", no_move)
    q = IdeficsExtractor(str(tiny_idefics), GENERAL, dtype="float32", quantization="4bit")
    got = q.extract(pixels, [2, 4])
    ref = ext.extract(pixels, [2, 4])
    for layer in (2, 4):
        corr = np.corrcoef(got[layer].ravel(), ref[layer].ravel())[0, 1]
        assert corr > 0.95, (layer, corr)
        assert not np.array_equal(got[layer], ref[layer])  # really quantised
    model = q.load()
    assert type(model.model.layers[0].mlp.down_proj).__name__ == "Linear4bit"
    info = q.load_info()
    assert info["quantization"] == "4bit" and info["kept_depth"] == 4
    assert (
        info["params_loaded"]
        == count_parameters(AutoConfig.from_pretrained(tiny_idefics), 4)["total"]
    )
    fp = q.fingerprint()
    assert fp["quantization"]["bnb_4bit_quant_type"] == "nf4"
    assert fp != ext.fingerprint()


# ------------------------------------------------------------------- fingerprint, errors


def test_fingerprint_without_weights_and_what_changes_it(
    tiny_idefics: Path, tiny_idefics_seed1: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*a: object, **k: object) -> None:
        raise AssertionError("weights must not be loaded")

    monkeypatch.setattr(IdeficsForVisionText2Text, "from_pretrained", boom)
    a = IdeficsExtractor(str(tiny_idefics), GENERAL)
    fp = a.fingerprint()
    json.dumps(fp)
    assert (fp["extractor"], fp["code_version"], fp["source"]) == ("idefics", CODE_VERSION, "local")
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= set(fp["files"])
    assert all(v.startswith("sha256:") for v in fp["files"].values())
    assert (fp["dtype"], fp["pooling"], fp["quantization"]) == ("bfloat16", "last", None)
    assert fp["rendered_prompt"] == GENERAL_RENDERED
    assert fp["preprocessing"]["size"] == {"height": 32, "width": 32}
    assert fp["preprocessing"]["image_mean"] == [0.48145466, 0.4578275, 0.40821073]
    same = [
        IdeficsExtractor(str(tiny_idefics), GENERAL, truncate=False, device="cpu"),
        IdeficsExtractor(
            str(tiny_idefics), "User:{image}" + GENERAL + "<end_of_utterance>\nAssistant:"
        ),
    ]
    assert all(e.fingerprint() == fp for e in same)  # placement, truncation: same features
    differ = [
        IdeficsExtractor(str(tiny_idefics), PATHOLOGY),
        IdeficsExtractor(str(tiny_idefics), GENERAL, pooling="mean_after_image"),
        IdeficsExtractor(str(tiny_idefics), GENERAL, dtype="float32"),
        IdeficsExtractor(str(tiny_idefics), GENERAL, quantization="8bit"),
    ]
    assert all(e.fingerprint() != fp for e in differ)
    other = tiny_idefics_seed1
    fo = IdeficsExtractor(str(other), GENERAL).fingerprint()
    assert fo["files"]["model.safetensors"] != fp["files"]["model.safetensors"]
    assert fo["files"]["tokenizer.json"] == fp["files"]["tokenizer.json"]


def test_image_processor_pinned_to_pil_and_transformers_version_fingerprinted(
    tiny_idefics: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever image processor transformers attaches (5.x: the torchvision one whenever
    torchvision is importable), the extractor runs the PIL one and fingerprints it."""
    import transformers
    from transformers import IdeficsProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    original = IdeficsProcessor.from_pretrained.__func__  # type: ignore[attr-defined]

    def other_backend(cls: type, *a: object, **k: object) -> object:
        proc = original(cls, *a, **k)
        proc.image_processor = CLIPImageProcessorPil()  # stands in for another backend
        return proc

    monkeypatch.setattr(IdeficsProcessor, "from_pretrained", classmethod(other_backend))
    e = IdeficsExtractor(str(tiny_idefics), GENERAL)
    assert type(e.processor().image_processor).__name__ == "IdeficsImageProcessorPil"
    fp = e.fingerprint()
    assert fp["preprocessing"]["backend"] == "IdeficsImageProcessorPil"
    assert fp["preprocessing"]["size"] == {"height": 32, "width": 32}
    assert fp["transformers"] == transformers.__version__


def test_hub_id_from_the_offline_cache(
    tiny_idefics: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    ext: IdeficsExtractor,
    pixels: torch.Tensor,
) -> None:
    import shutil

    import huggingface_hub.constants as hub_constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--acme--tiny-idefics"
    shutil.copytree(tiny_idefics, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    hub = IdeficsExtractor("acme/tiny-idefics", GENERAL, dtype="float32", truncate=False)
    fp = hub.fingerprint()
    assert fp["source"] == "hub" and fp["resolved_revision"] == commit and "files" not in fp
    assert fp["rendered_prompt"] == GENERAL_RENDERED
    np.testing.assert_array_equal(hub.extract(pixels, [2])[2], ext.extract(pixels, [2])[2])
    with pytest.raises(ExtractorError, match="acme/absent") as info:
        IdeficsExtractor("acme/absent", GENERAL).layers()  # offline, not cached: no download
    assert "\n" not in str(info.value)


def test_errors_are_clear(
    compose: Compose,
    tiny_idefics: Path,
    ext: IdeficsExtractor,
    pixels: torch.Tensor,
    tmp_path: Path,
) -> None:
    cfg = compose("model=idefics9b", f"model.hf_id={tiny_idefics}", "model.dtype=float32").model
    with pytest.raises(ExtractorError, match="choose prompt=general"):
        from_config(cfg, "")  # the default prompt=none
    with pytest.raises(ExtractorError, match="2 {image} placeholders"):
        from_config(cfg, "{image}{image}What?")
    with pytest.raises(ExtractorError, match="literal <image>"):
        from_config(cfg, "User:<image>What?")
    with pytest.raises(ExtractorError, match="valid poolings"):
        IdeficsExtractor(str(tiny_idefics), GENERAL, pooling="cls")
    with pytest.raises(ExtractorError, match="valid: \\['none', '8bit', '4bit'\\]"):
        IdeficsExtractor(str(tiny_idefics), GENERAL, quantization="int4")
    with pytest.raises(ExtractorError, match="local model directory not found"):
        from_config(compose("model=idefics9b", f"model.hf_id={tmp_path / 'nope'}").model, GENERAL)
    with pytest.raises(ExtractorError, match="valid layers"):
        ext.extract(pixels, [N_LAYERS + 1])
    with pytest.raises(ExtractorError, match=r"<image> tokens per sample \[1, 1, 1\] != images"):
        ext.extract(torch.stack([pixels, pixels], dim=1), [1])
    # an 80B-sized config refuses float16 before anything is loaded
    big = tmp_path / "big"
    cfg80 = copy.deepcopy(AutoConfig.from_pretrained(tiny_idefics))
    cfg80.hidden_size, cfg80.num_hidden_layers = 8192, 80
    cfg80.save_pretrained(big)
    with pytest.raises(ExtractorError, match="float16 is refused for IDEFICS-80B"):
        IdeficsExtractor(str(big), GENERAL, dtype="float16").layers()
    assert IdeficsExtractor(str(big), GENERAL).layers()[-2:] == [80, "final_norm"]
    # every batch: a layer that goes non-finite is named
    broken = IdeficsExtractor(str(tiny_idefics), GENERAL, dtype="float32")
    broken.load([3]).model.layers[2].mlp.down_proj.weight.data.fill_(float("nan"))
    with pytest.raises(ExtractorError, match=r"layer 3: non-finite"):
        broken.extract(pixels, [1, 3])


def test_preprocess_real_image_and_pickling(
    ext: IdeficsExtractor, tiny_idefics: Path, shared_data: Path
) -> None:
    with Image.open(shared_data / "T8_knee_kl" / "test" / "0" / "9290697R.png") as im:
        img = im.copy()
    assert img.mode == "L"
    x = ext.preprocess(img)
    assert x.dtype == torch.float32 and tuple(x.shape) == (3, 32, 32)
    proc = _pil_processor(tiny_idefics)
    direct = proc(text=[interleave(GENERAL, img.convert("RGB"))], return_tensors="pt")
    np.testing.assert_array_equal(x.numpy(), direct["pixel_values"][0, 0].numpy())
    ext.extract(x[None], [1])
    clone = pickle.loads(pickle.dumps(ext))
    assert clone._model is None and ext._model is not None
    np.testing.assert_array_equal(clone.preprocess(img).numpy(), x.numpy())


# ------------------------------------------------------------------------ configs, plan


def test_model_configs_compose_with_the_paper_settings(compose: Compose) -> None:
    cfg = compose("model=idefics80b", "task=demo", "prompt=general")
    assert (cfg.model.name, cfg.model.kind, cfg.model.hf_id) == (
        "idefics80b",
        "idefics",
        "HuggingFaceM4/idefics-80b-instruct",
    )
    assert cfg.layer == 32 and cfg.model.layers == 32  # model.layers follows layer
    assert cfg.model.dtype.value == "bfloat16" and cfg.model.pooling == "last"
    assert (cfg.model.quantization, cfg.model.device_map, cfg.model.truncate) == (
        "none",
        "auto",
        True,
    )
    assert cfg.prompt.text == GENERAL
    cfg = compose("model=idefics80b", "layer=16", "model.quantization=4bit")
    assert cfg.layer == 16 and cfg.model.layers == 16 and cfg.model.quantization == "4bit"
    cfg = compose("model=idefics9b")
    assert cfg.model.hf_id == "HuggingFaceM4/idefics-9b-instruct" and cfg.layer == 13
    assert cfg.prompt.name == "pathology"  # the demo task's default prompt (its defaults list)
    assert EXTRACTORS.get("idefics") is from_config
    cfg = compose("model=idefics9b", "prompt=none")
    with pytest.raises(ExtractorError, match="choose prompt=general"):
        EXTRACTORS.get(cfg.model.kind)(cfg.model, str(cfg.prompt.text))
    ext = from_config(
        compose(
            "model=idefics80b", "prompt=pathology", "model.max_memory={0:70GiB,cpu:100GiB}"
        ).model,
        PATHOLOGY,
    )
    assert ext.dtype == "bfloat16" and ext.max_memory_limits() == {0: "70GiB", "cpu": "100GiB"}
    assert ext.effective_device_map() == "auto"
    # the other models are untouched by the new fields
    assert compose("model=clip").model.quantization == "none"


# --------------------------------------------------------------------------- end to end


def test_python_m_medprobe_with_a_tiny_idefics_on_real_images(
    tmp_path: Path, shared_data: Path, tiny_idefics: Path
) -> None:
    proc = subprocess.run(
        [
            sys.executable, "-m", "medprobe", "model=idefics9b", f"model.hf_id={tiny_idefics}",
            "model.dtype=float32", "model.batch_size=16", "layer=3", "prompt=general",
            "task=csv", f"data_root={shared_data / 'T8_knee_kl'}", "bootstrap.n=100",
            "tracker=none", "progress=false", "output_dir=out",
        ],
        cwd=tmp_path, env=isolated_env(tmp_path), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads((tmp_path / "out" / "results.json").read_text())
    # the model's identity (model=idefics9b) and the extractor kind that built it
    assert (r["model"], r["model_kind"], r["layer"]) == ("idefics9b", "idefics", 3)
    assert r["prompt"] == GENERAL and r["extractor"]["rendered_prompt"] == GENERAL_RENDERED
    assert r["counts"]["feature_dim"] == WIDTH
    assert sum(r["counts"][k] for k in ("fit", "val", "test")) == 100
    load = r["extractor_load"]
    assert load["kept_depth"] == 4 and load["truncated"] is True
    assert load["params_loaded"] < load["params_full"]
    assert load["device_type"] == "cpu" and load["attn_implementation"] in {"eager", "sdpa"}
    import transformers

    v = r["versions"]
    assert v["transformers"] == transformers.__version__ and "tokenizers" in v
    assert {"accelerate", "bitsandbytes"} <= set(v)
    auc = r["metrics"]["auroc_macro"]
    assert 0.0 <= auc["ci_low"] <= auc["value"] <= auc["ci_high"] <= 1.0
    assert auc["n_replicates"] == 100


def test_float16_with_8bit_is_allowed_for_the_80b_as_the_paper_ran_it() -> None:
    """Issue 12, item 3: float16 is refused for an unquantised (or 4-bit) 80B-sized model and
    accepted with 8-bit weights (the authors' BitsAndBytesConfig(load_in_8bit=True))."""
    from types import SimpleNamespace

    from medprobe.errors import ExtractorError
    from medprobe.extractors.idefics.extractor import IdeficsExtractor

    big = SimpleNamespace(hidden_size=8192, num_hidden_layers=80)
    for quantization, refused in (("none", True), ("4bit", True), ("8bit", False)):
        ex = IdeficsExtractor.__new__(IdeficsExtractor)
        ex.dtype, ex.quantization = "float16", quantization
        if refused:
            with pytest.raises(ExtractorError, match="float16 with model.quantization=8bit"):
                ex.check_config(big)
        else:
            ex.check_config(big)


def test_non_finite_features_name_the_layer_and_the_images(tmp_path: Path) -> None:
    """The features stage turns the batch rows of NaN features into the images' paths."""
    import numpy as np
    import torch

    from medprobe.cache import FeatureCache
    from medprobe.errors import ExtractorError
    from medprobe.extractors.base import check_features
    from medprobe.pipeline.features import extract_to_cache

    class NanOnSecond:
        def preprocess(self, image: object) -> torch.Tensor:
            return torch.zeros(1)

        def extract(self, batch: torch.Tensor, layers: list[int]) -> dict[int, np.ndarray]:
            out = {39: np.ones((len(batch), 4), dtype=np.float32)}
            out[39][1, 2] = np.nan
            check_features(out, len(batch))
            return out

    from PIL import Image

    paths = []
    for i in range(3):
        paths.append(tmp_path / f"knee{i}.png")
        Image.new("RGB", (4, 4)).save(paths[-1])
    w = FeatureCache(tmp_path / "c").writer("b" * 64, [p.name for p in paths], [39], meta={})
    with pytest.raises(ExtractorError, match=r"layer 39: non-finite features .* in 1 of the "
                       r"batch's 3 images: .*knee1\.png; 0 rows are saved"):  # fmt: skip
        extract_to_cache(NanOnSecond(), paths, w, [39], batch_size=3, num_workers=0,
                         max_side=64, progress=False)  # fmt: skip
