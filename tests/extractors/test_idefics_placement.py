"""Model-parallel placement of IDEFICS inside a node: ``device_plan`` (meta device, no weights,
no GPU) and the loader that must do what the plan says. (The command line that prints plans:
test_idefics_plan.py.)

The published 80B / 9B plans are computed from ``PUBLISHED_CONFIGS``; GPU indices in
``max_memory`` need not exist. The tiny random IDEFICS (tests/tiny_models.py) is loaded for real
on CPU with cpu/disk offload, the one multi-device placement a CPU machine can run.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoConfig

from medprobe.errors import ExtractorError
from medprobe.extractors.idefics import (
    PUBLISHED_CONFIGS,
    IdeficsExtractor,
    count_parameters,
    device_plan,
    format_plan,
    memory_plan,
    weight_bytes,
)

I80 = "HuggingFaceM4/idefics-80b-instruct"
FOUR_48 = {0: "48GiB", 1: "48GiB", 2: "48GiB", 3: "48GiB"}  # the paper's four 48 GB GPUs
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated")


def _blocks(plan: dict, key: str = "decoder_blocks") -> list[int]:
    """Block indices device after device, in the plan's device order."""
    return [b for row in plan["devices"] for b in row[key]]


def _span(xs: list[int]) -> str:
    """A contiguous run as load_info writes it: "0-3", "5", "-"."""
    assert xs == list(range(xs[0], xs[-1] + 1)) if xs else True
    return "-" if not xs else str(xs[0]) if len(xs) == 1 else f"{xs[0]}-{xs[-1]}"


def _by_device(plan: dict) -> dict:
    return {r["device"]: r for r in plan["devices"]}


# ------------------------------------------------------------------- published checkpoints


def test_80b_layer_32_bf16_on_four_48gib_gpus_is_the_memory_plan_split_in_order() -> None:
    plan = device_plan("idefics80b", 32, max_memory=FOUR_48)
    assert plan["model"] == I80 and plan["depth"] == 32 and plan["truncated"]
    trunc = count_parameters(PUBLISHED_CONFIGS[I80], 32)
    assert plan["total_bytes"] == weight_bytes(trunc, "none") == 2 * 32_755_771_664
    row = next(r for r in memory_plan(I80, 32) if r["quantization"] == "none")
    assert round(plan["total_bytes"] / 1e9, 1) == round(row["gb_truncated"], 1) == 65.5
    # every block the layer needs is placed once, contiguous per device, devices in order
    assert _blocks(plan) == list(range(32))
    assert _blocks(plan, "cross_attn_blocks") == list(range(8))
    rows = _by_device(plan)
    assert list(rows) == [0, 1, 2, 3]
    assert [rows[d]["decoder_blocks"] for d in range(4)] == [
        list(range(0, 9)),
        list(range(9, 20)),
        list(range(20, 31)),
        [31],
    ]  # transformers' "auto" = balanced over the listed GPUs
    assert rows[0]["modules"] == ["embed_tokens", "vision_model", "perceiver_resampler"]
    assert rows[3]["modules"] == ["norm", "lm_head"] and rows[3]["cross_attn_blocks"] == list(
        range(8)
    )
    assert all(r["weight_bytes"] <= r["limit_bytes"] == 48 * 2**30 for r in rows.values())
    assert plan["fits"] and not plan["spills"] and plan["offloaded"] == [] and plan["error"] is None
    text = format_plan(plan)
    assert "0-8" in text and "20-30" in text and "32 of 32" in text and "65.5 GB" in text
    assert "run: python -m medprobe model=idefics80b layer=32 " in text
    assert "'model.max_memory={0:48GiB,1:48GiB,2:48GiB,3:48GiB}'" in text


def test_plan_equals_accelerates_own_inference_with_the_models_no_split_classes() -> None:
    """An independent check of the bf16 maps: accelerate's get_balanced_memory +
    infer_auto_device_map with the decoder / cross-attention / vision blocks unsplit."""
    from accelerate import infer_auto_device_map
    from accelerate.utils import get_balanced_memory

    from medprobe.extractors.idefics.architecture import truncated_config
    from medprobe.extractors.idefics.placement import quiet_placement, skeleton

    with quiet_placement():
        model, hq = skeleton(truncated_config(AutoConfig.for_model("idefics", **PUBLISHED_CONFIGS[I80]), 32), "bfloat16", "none")  # fmt: skip
        no_split = sorted(model._no_split_modules)
        assert hq is None and no_split == [
            "IdeficsDecoderLayer",
            "IdeficsGatedCrossAttentionLayer",
            "IdeficsVisionEncoderLayer",
        ]
        for limits in (FOUR_48, {0: "80GiB"}, {0: "24GiB", "cpu": "100GiB"}):
            balanced = get_balanced_memory(
                model, max_memory=dict(limits), no_split_module_classes=no_split,
                dtype=torch.bfloat16,
            )  # fmt: skip
            expected = infer_auto_device_map(
                model, max_memory=balanced, no_split_module_classes=no_split, dtype=torch.bfloat16
            )
            assert device_plan("idefics80b", 32, max_memory=limits)["modules"] == dict(expected)


def test_one_80gib_gpu_holds_everything_and_24gib_spills_in_bf16() -> None:
    one = device_plan("idefics80b", 32, max_memory={0: "80GiB"})
    assert one["modules"] == {"": 0} and one["fits"]
    assert [r["device"] for r in one["devices"]] == [0]
    assert one["devices"][0]["decoder_blocks"] == list(range(32))
    small = device_plan("idefics80b", 32, max_memory={0: "24GiB"})
    assert small["spills"] and not small["fits"] and small["offloaded"] == ["disk"]
    assert _blocks(small) == list(range(32))  # still all placed, the rest on disk
    rows = _by_device(small)
    assert rows[0]["decoder_blocks"] == list(range(13)) and rows[0]["weight_bytes"] <= 24 * 2**30
    assert rows["disk"]["decoder_blocks"] == list(range(13, 32))
    assert small["total_bytes"] == one["total_bytes"]
    assert "SPILLS to disk" in format_plan(small) and "run:" not in format_plan(small)
    with_cpu = device_plan("idefics80b", 32, max_memory={0: "24GiB", "cpu": "200GiB"})
    assert with_cpu["offloaded"] == ["cpu"] and with_cpu["spills"]


def test_quantised_plans_fit_24gb_and_match_the_memory_plan() -> None:
    rows = {r["quantization"]: r for r in memory_plan(I80, 32)}
    trunc = count_parameters(PUBLISHED_CONFIGS[I80], 32)
    four = device_plan("idefics80b", 32, quantization="4bit", max_memory={0: "24GiB"})
    assert four["total_bytes"] == weight_bytes(trunc, "4bit")  # absmax included
    assert round(four["total_bytes"] / 1e9, 1) == round(rows["4bit"]["gb_truncated"], 1) == 19.2
    assert four["fits"] and four["modules"] == {"": 0} and four["error"] is None
    two = device_plan("idefics80b", 32, quantization="4bit", max_memory={0: "24GiB", 1: "24GiB"})
    assert two["fits"] and _blocks(two) == list(range(32))
    assert [r["decoder_blocks"] for r in two["devices"]] == [list(range(17)), list(range(17, 32))]
    eight = device_plan("idefics80b", 32, quantization="8bit", max_memory=FOUR_48)
    assert eight["total_bytes"] == weight_bytes(trunc, "8bit")
    assert round(eight["total_bytes"] / 1e9, 1) == 33.3 and eight["fits"]
    # bitsandbytes refuses cpu/disk offload: the plan says so instead of failing
    refused = device_plan("idefics80b", 32, quantization="4bit", max_memory={0: "12GiB"})
    assert refused["spills"] and not refused["fits"]
    assert "dispatched on the CPU or the disk" in refused["error"]
    assert "REFUSED" in format_plan(refused)
    # transformers sizes a 4-bit weight at 0.5 byte without its absmax (+12.5 %): the last GPU
    # it fills can hold more than its max_memory (here 23.9 GB > 22 GiB = 23.6 GB)
    tight = device_plan(
        "idefics80b", "all", quantization="4bit", max_memory={0: "22GiB", 1: "22GiB"}
    )
    assert tight["over_limit"] == [1] and not tight["fits"]
    assert _by_device(tight)[1]["weight_bytes"] > 22 * 2**30 >= _by_device(tight)[0]["weight_bytes"]
    assert "OVER max_memory on 1" in format_plan(tight)


def test_9b_and_untruncated_plans() -> None:
    p9 = device_plan("idefics9b", 13, max_memory={0: "24GiB"})
    assert p9["model"] == "HuggingFaceM4/idefics-9b-instruct" and p9["depth"] == 16
    assert round(p9["total_bytes"] / 1e9, 1) == 9.9 and p9["fits"]
    full = device_plan("HuggingFaceM4/idefics-9b", 13, max_memory={0: "24GiB"}, truncate=False)
    assert full["depth"] == 32 and not full["truncated"] and full["fits"]
    assert full["total_bytes"] == 2 * 8_929_679_632
    assert "model.truncate=false" in format_plan(full)
    sweep = device_plan("idefics80b", "8,16,32", max_memory=FOUR_48)
    assert sweep["layers"] == [8, 16, 32] and sweep["depth"] == 32
    assert device_plan("idefics80b", "final_norm", max_memory=FOUR_48)["depth"] == 80


def test_bad_plan_input_is_refused_clearly() -> None:
    with pytest.raises(ExtractorError, match="unknown model 'idefics70b'; valid: idefics80b"):
        device_plan("idefics70b", 32, max_memory={0: "80GiB"})
    with pytest.raises(ExtractorError, match="needs max_memory"):
        device_plan("idefics80b", 32)
    with pytest.raises(ExtractorError, match="unknown layer"):
        device_plan("idefics80b", 81, max_memory={0: "80GiB"})
    with pytest.raises(ExtractorError, match="unknown quantization"):
        device_plan("idefics80b", 32, quantization="3bit", max_memory={0: "80GiB"})
    with pytest.raises(ExtractorError, match="float16 is refused"):
        device_plan("idefics80b", 32, dtype="float16", max_memory={0: "80GiB"})


# ------------------------------------------------------------- the loader does what's planned


def test_tiny_load_follows_the_plan_and_offload_keeps_states_exact(tiny_idefics: Path) -> None:
    """Truncated at layer 3 (4 of 8 blocks), cpu limited to ~60 % of the weights: the rest
    goes to disk. The plan's map is the load's ``hf_device_map``, the placement recorded in
    ``load_info`` is the plan's, and the states equal an unplanned load bit for bit; the plan's
    explicit map passed as ``device_map`` gives the same."""
    cfg = AutoConfig.from_pretrained(tiny_idefics)
    total = weight_bytes(count_parameters(cfg, 4), itemsize=4)
    limits = {"cpu": int(0.6 * total)}
    plan = device_plan(tiny_idefics, 3, dtype="float32", max_memory=limits)
    assert plan["depth"] == 4 and plan["total_bytes"] == total
    assert plan["offloaded"] == ["cpu", "disk"] and plan["spills"]
    assert _blocks(plan) == list(range(4)) and _blocks(plan, "cross_attn_blocks") == [0, 1]
    assert _by_device(plan)["cpu"]["weight_bytes"] <= limits["cpu"]

    pixels = torch.randn(2, 3, 32, 32)
    plain = IdeficsExtractor(str(tiny_idefics), "Q?", dtype="float32", device="cpu")
    planned = IdeficsExtractor(
        str(tiny_idefics), "Q?", dtype="float32", device_map="auto", max_memory=limits
    )
    explicit = IdeficsExtractor(
        str(tiny_idefics), "Q?", dtype="float32", device_map=plan["modules"]
    )
    ref = plain.extract(pixels, [1, 3])
    for ext in (planned, explicit):
        got = ext.extract(pixels, [1, 3])
        for layer in (1, 3):
            np.testing.assert_array_equal(got[layer], ref[layer])
        assert ext.load().hf_device_map == plan["modules"]
        info = ext.load_info()
        assert info["kept_depth"] == 4 and info["devices"] == ["cpu", "disk"]
        assert info["placement"] == {
            str(r["device"]): {
                "decoder_blocks": _span(r["decoder_blocks"]),
                "cross_attn_blocks": _span(r["cross_attn_blocks"]),
            }
            for r in plan["devices"]
        }
    assert plain.load_info()["placement"] == {
        "cpu": {"decoder_blocks": "0-3", "cross_attn_blocks": "0-1"}
    }


def test_tiny_quantised_plan_counts_what_bitsandbytes_converts(tiny_idefics: Path) -> None:
    cfg = AutoConfig.from_pretrained(tiny_idefics)
    counts = count_parameters(cfg, 4)
    for q in ("8bit", "4bit"):
        plan = device_plan(
            tiny_idefics, 3, dtype="float32", quantization=q, max_memory={"cpu": "1GB"}
        )
        assert plan["total_bytes"] == weight_bytes(counts, q, itemsize=4)
        assert plan["modules"] == {"": "cpu"} and plan["fits"] and plan["error"] is None
