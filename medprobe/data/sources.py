"""Where a manifest's images come from: files on disk, or rows of a dataset.

Every stage that touches pixels or image bytes (the image scan, the cache key's image
fingerprint, the extractor's loader, the aspect-ratio note) goes through an
:class:`ImageSource`, addressed by the manifest's ``paths`` entries as strings (its
*locators*):

* :data:`FILES` (:class:`FileImages`): the default, ``paths`` are image files;
  :func:`medprobe.data.images.load_image` and :mod:`medprobe.hashing` read them.
* :class:`medprobe.data.tasks.hf_task.HfImages`: ``task=hf``; ``paths`` are locators such as
  ``org/name:train[17]`` (dataset, split, row), and the images stream from the dataset's arrow
  or parquet storage without a copy being written.

A source must be picklable (the extractor's DataLoader workers receive it).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from PIL import Image


class ImageSource(Protocol):
    """The images behind a manifest's locators (``str(manifest.paths[i])``)."""

    #: ``"files"`` or the dataset kind (``"hf"``); recorded in results (cache info).
    kind: str

    def load(self, locator: str, max_side: int) -> Image.Image:
        """The image as 8-bit RGB after every rule of :mod:`medprobe.data.images`.

        Raises:
            medprobe.errors.ImageLoadError: unreadable image, naming the locator.
        """
        ...

    def digests(self, locators: Sequence[str], mode: str, workers: int) -> list[str]:
        """One digest per locator for the feature-cache key (``data.fingerprint``: ``content``
        = the image's bytes, ``stat`` = cheap metadata); markers instead of errors."""
        ...

    def scan(
        self, locators: Sequence[str], *, max_side: int, max_workers: int, progress: bool
    ) -> list[tuple[str, str]]:
        """Fully load every image; ``[(locator, reason), ...]`` for each bad one, in order."""
        ...

    def far_from_square_share(self, locators: Sequence[str]) -> float | None:
        """As :func:`medprobe.data.images.far_from_square_share` (headers only)."""
        ...


class FileImages:
    """Image files: ``paths`` of the manifest are the files themselves."""

    kind = "files"

    def load(self, locator: str, max_side: int) -> Image.Image:
        from medprobe.data.images import load_image

        return load_image(locator, max_side=max_side)

    def digests(self, locators: Sequence[str], mode: str, workers: int) -> list[str]:
        from medprobe.hashing import image_digest, stat_digest

        if mode == "stat":
            return [stat_digest(p) for p in locators]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            return list(pool.map(image_digest, locators))

    def scan(
        self, locators: Sequence[str], *, max_side: int, max_workers: int, progress: bool
    ) -> list[tuple[str, str]]:
        from medprobe.data.images import scan_images

        return scan_images(locators, max_side=max_side, max_workers=max_workers, progress=progress)

    def far_from_square_share(self, locators: Sequence[str]) -> float | None:
        from medprobe.data.images import far_from_square_share

        return far_from_square_share(locators)


#: The default source (stateless).
FILES = FileImages()


def fingerprint(ids: Sequence[str], digests: Sequence[str], mode: str) -> str:
    """sha256 over ``mode`` and every ``(id, digest)`` pair: the cache key's image part.

    Files and dataset rows are fingerprinted by this one rule (file tasks' keys are unchanged:
    it is the rule :meth:`medprobe.data.manifest.Manifest.image_fingerprint` always used)."""
    h = hashlib.sha256(mode.encode())
    for i, d in zip(ids, digests, strict=True):
        h.update(f"{i}\0{d}\n".encode())
    return h.hexdigest()
