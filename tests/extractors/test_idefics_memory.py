"""IDEFICS parameter counts and weight memory on the meta device (no weights, no download)."""

from __future__ import annotations

import pytest

from medprobe.errors import ExtractorError
from medprobe.extractors.idefics.architecture import PUBLISHED_CONFIGS, kept_depth
from medprobe.extractors.idefics.memory import count_parameters, memory_plan, weight_bytes


def test_memory_plan_matches_the_published_checkpoint_sizes() -> None:
    # bf16 shard sizes on the hub: 9b-instruct 9.97 + 7.89 GB; 80b-instruct 17 shards ~160 GB
    p9 = count_parameters(PUBLISHED_CONFIGS["HuggingFaceM4/idefics-9b-instruct"])
    assert p9["total"] == 8_929_679_632 and abs(2 * p9["total"] / 1e9 - (9.97 + 7.89)) < 0.01
    plan = {r["quantization"]: r for r in memory_plan("HuggingFaceM4/idefics-80b-instruct", 32)}
    assert plan["none"]["params_full"] == 79_967_843_624
    assert (
        plan["none"]["depth_truncated"] == 32 and plan["none"]["params_truncated"] == 32_755_771_664
    )
    assert (
        round(plan["none"]["gb_full"], 1) == 159.9
        and round(plan["none"]["gb_truncated"], 1) == 65.5
    )
    assert (
        round(plan["8bit"]["gb_truncated"], 1) == 33.3
        and round(plan["4bit"]["gb_truncated"], 1) == 19.2
    )
    assert round(plan["8bit"]["gb_full"], 1) == 80.5 and round(plan["4bit"]["gb_full"], 1) == 45.7


def test_weight_bytes_per_quantisation() -> None:
    counts = {"total": 1000, "linear": 640, "linear_rows": 10, "other": 360}
    assert weight_bytes(counts) == 2000 and weight_bytes(counts, itemsize=4) == 4000
    assert weight_bytes(counts, "8bit") == 720 + 640 + 4 * 10  # 1 byte + a scale per row
    assert weight_bytes(counts, "4bit") == 720 + 320 + 4 * 10  # 0.5 byte + absmax per 64
    with pytest.raises(ExtractorError, match=r"valid: \['none', '8bit', '4bit'\]"):
        weight_bytes(counts, "3bit")


def test_kept_depth_of_the_published_models() -> None:
    cfg80 = PUBLISHED_CONFIGS["HuggingFaceM4/idefics-80b-instruct"]
    assert kept_depth([32], cfg80["num_hidden_layers"], cfg80["cross_layer_interval"]) == 32
    assert kept_depth([33], 80, 4) == 36 and kept_depth(["final_norm"], 80, 4) == 80
    assert kept_depth([13], 32, 4) == 16 and kept_depth(["image_latents"], 32, 4) == 0
