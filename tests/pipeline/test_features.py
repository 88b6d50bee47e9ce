"""The features stage (medprobe.pipeline.features): errors keep their class across processes."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import Compose

from medprobe.cache import FeatureCache
from medprobe.errors import BadImagesError, ImageLoadError
from medprobe.pipeline import features as feat


class _Tiny:
    """An extractor stand-in: one layer, the mean pixel value of each image."""

    def layers(self) -> list[int]:
        return [0]

    def preprocess(self, image: object) -> torch.Tensor:
        return torch.from_numpy(np.asarray(image, dtype=np.float32)).mean().reshape(1)

    def extract(self, batch: torch.Tensor, layers: list[int]) -> dict[int, np.ndarray]:
        return {0: batch.numpy().astype(np.float32)}


def test_image_load_error_round_trips_as_a_worker_rebuilds_it() -> None:
    e = ImageLoadError("/x/a.png", "truncated\nfile")
    assert str(e) == "/x/a.png: truncated file"
    assert str(pickle.loads(pickle.dumps(e))) == "/x/a.png: truncated file"
    # torch's ExceptionWrapper.reraise rebuilds the exception from one message string
    assert str(ImageLoadError("Caught ImageLoadError in worker\n/x/a.png: gone")).endswith("gone")


@pytest.mark.parametrize("num_workers", [0, 1])
def test_an_image_failing_during_extraction_is_bad_images_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, num_workers: int
) -> None:
    """In the main process and re-raised from a DataLoader worker alike (recognised by class)."""
    from PIL import Image

    import medprobe.data.images as images

    paths = []
    for i in range(4):
        p = tmp_path / f"{i}.png"
        Image.new("RGB", (8, 8), (i * 10, 0, 0)).save(p)
        paths.append(p)
    real = images.load_image

    def flaky(path: object, max_side: int = 1024) -> object:
        if str(path).endswith("2.png"):
            raise ImageLoadError(str(path), "became unreadable")
        return real(path, max_side=max_side)

    monkeypatch.setattr(images, "load_image", flaky)  # workers are forked: they inherit it
    writer = FeatureCache(tmp_path / "cache").writer(
        "a" * 64, [p.name for p in paths], [0], meta={}
    )
    with pytest.raises(BadImagesError, match=r"2\.png: became unreadable.*2 rows are saved"):
        feat.extract_to_cache(_Tiny(), paths, writer, [0], batch_size=2,
                              num_workers=num_workers, max_side=64, progress=False)  # fmt: skip


class _MeanColour(_Tiny):
    """The mean pixel value of each image, with a fingerprint (the cache key needs one)."""

    def fingerprint(self) -> dict[str, str]:
        return {"extractor": "mean_colour"}


def test_resize_mode_enters_the_key_only_when_not_crop_and_the_note(
    compose: Compose, tmp_path: Path
) -> None:
    """Issue 14.5 on 2:1 images: ``crop`` keeps the key spec (and so every key written before
    ``model.resize``) as it was; ``pad`` and ``squash`` are other entries holding other
    features; under ``crop`` the run notes that the images are far from square."""
    from dataclasses import replace

    from PIL import Image
    from results_factory import make_results

    from medprobe.cache import cache_key
    from medprobe.data.manifest import Manifest
    from medprobe.results import CacheInfo, run_notes

    paths = []
    for i in range(4):
        paths.append(tmp_path / f"{i}.png")
        Image.new("RGB", (32, 16), (200, 200, 200)).save(paths[-1])
    m = Manifest(task="t", ids=[p.name for p in paths], paths=paths, labels=np.zeros(4, int),
                 classes=["a"], split=np.array(["train"] * 4, dtype=object))  # fmt: skip
    base = (f"cache_dir={tmp_path / 'cache'}", "progress=false", "model.num_workers=0")
    out = {}
    for mode in ("crop", "pad", "squash"):
        cache, key, info = feat.features(compose(*base, f"model.resize={mode}"), m,
                                         _MeanColour(), [0])  # fmt: skip
        out[mode] = (key, info, cache.load(key, 0)[:, 0].astype(float))
    crop_spec = out["crop"][1]["spec"]
    assert "resize" not in crop_spec and out["crop"][0] == cache_key(crop_spec)
    assert out["pad"][1]["spec"] == {**crop_spec, "resize": "pad"}
    assert len({out[k][0] for k in out}) == 3  # three entries
    assert list(out["crop"][2]) == [200.0] * 4  # the stand-in sees the whole image
    assert list(out["pad"][2]) == [100.0] * 4  # half of the square is black margin
    assert list(out["squash"][2]) == [200.0] * 4
    assert out["crop"][1]["far_from_square"] == 1.0

    res = make_results(classes=["a", "b"], bootstrap_n=300)
    res = replace(res, cache=CacheInfo.from_json(out["crop"][1]),
                  config={"model": {"resize": "crop"}})  # fmt: skip
    assert run_notes(res, np.array([0, 1] * 10))[-1] == (
        "100% of the images are far from square (aspect ratio >= 1.5): under model.resize=crop "
        "the extractor's preprocessing may crop their borders (EfficientNet, CLIP); "
        "model.resize=pad keeps every pixel"
    )
    assert CacheInfo.from_json(out["crop"][1]).to_json()["far_from_square"] == 1.0
    padded = replace(res, config={"model": {"resize": "pad"}})
    assert not any("far from square" in n for n in run_notes(padded, np.array([0, 1] * 10)))
