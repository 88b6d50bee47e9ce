"""The features stage (medprobe.pipeline.features): errors keep their class across processes."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

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
