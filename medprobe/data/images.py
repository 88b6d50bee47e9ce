"""Every image-loading rule of medprobe, in one place.

:func:`load_image` turns any supported file into an 8-bit RGB :class:`PIL.Image.Image`; the
rules run in this order and each is commented where it is applied, with its source:

1. **Full decode, never partial.** The file is opened and fully decoded (``Image.load()``) with
   Pillow's ``ImageFile.LOAD_TRUNCATED_IMAGES`` left off, so a missing, empty, unreadable,
   unidentifiable or truncated file raises :class:`ImageLoadError` naming the path and the cause,
   instead of coming back as a silently grey-padded or partial image. If some other module has
   switched that flag on, loading refuses to run (``RuntimeError``).
2. **EXIF orientation** is applied (``ImageOps.exif_transpose``): cameras (dermoscopy, fundus,
   phone photos) store pixels sensor-up plus an orientation tag; viewers show them rotated.
3. **Multi-frame files** (multi-page TIFF, animated GIF/PNG, MPO): the first frame only.
4. **High bit depth** (modes ``I;16``, ``I;16B``, ``I;16L``, ``I;16N``, ``I``, ``F``; 16-bit
   greyscale PNG and TIFF open as ``I;16``) is scaled linearly to 8 bit by the image's own
   maximum so that the maximum maps to 255, never clipped. Source: the paper, section "Image
   Pre-processing" (intensities normalised to the image's maximum value); PadChest ships 16-bit
   PNGs. Details: ``out = floor(v * 255 / max + 0.5)`` (round half up) in float64; a negative
   minimum is first shifted to 0 (``v - min``), so the range maps to [0, 255]; an all-zero
   image (max 0) stays all zeros; NaN/inf pixels raise :class:`ImageLoadError`. 8-bit images are
   never rescaled. 16-bit *colour* files (RGB/RGBA PNG or TIFF, 16-bit grey+alpha PNG) are
   refused with :class:`ImageLoadError`: Pillow decodes them by keeping only the high byte of
   each sample (a 12-bit image would come back with values 0-15), which cannot be undone.
5. **Mode conversion to RGB.** Grey (``1``, ``L``) becomes three identical channels; palette
   (``P``), ``CMYK`` (Pillow's conversion, Adobe-inverted JPEGs handled, no ICC colour
   management), ``YCbCr``, ``LAB``, ``HSV`` use Pillow's conversion. Alpha (``LA``, ``PA``,
   ``RGBA``, palette or colour-key transparency) is dropped by compositing onto **black**:
   ``c' = round(c * a / 255)``, because the background of radiographs and fundus photographs
   is black, so a transparent margin becomes the same black as the rest of the background
   rather than a white frame. (Colour-key transparency of a high-bit-depth image is ignored:
   rule 4 has already produced a new 8-bit image.)
6. **Downsampling.** An image whose longer side exceeds ``max_side`` (default 1024) is resized
   so that the longer side is exactly ``max_side`` and the shorter side is
   ``round(short * max_side / long)`` (round half up, at least 1), with Pillow's LANCZOS filter
   (antialiasing). Source: the paper, "Image Pre-processing": images larger than 1024 pixels
   were downsampled to 1024. Images of at most ``max_side`` pixels are not touched (never
   upsampled).

Change any rule → bump :data:`LOADER_VERSION`: it is part of the feature-cache key via
:func:`loader_fingerprint`.
"""

from __future__ import annotations

import os
import stat
import struct
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import PIL
from PIL import Image, ImageFile, ImageOps
from tqdm import tqdm

from medprobe.errors import ImageLoadError  # noqa: F401 (re-exported)

__all__ = [
    "LOADER_VERSION",
    "ImageLoadError",
    "load_image",
    "loader_fingerprint",
    "scan_images",
]

#: Bump whenever a rule in this module changes what pixels come out (it keys the feature cache).
LOADER_VERSION = 1

#: Pillow modes holding more than 8 bits per sample (rule 4).
HIGH_BIT_DEPTH_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})

#: Modes whose alpha (or colour-key transparency) is composited onto black (rule 5).
_ALPHA_MODES = frozenset({"LA", "PA", "RGBA", "RGBa", "La"})

_RESAMPLE = Image.Resampling.LANCZOS
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def load_image(path: str | os.PathLike[str], max_side: int = 1024) -> Image.Image:
    """Load one image file as 8-bit RGB, applying every rule listed in the module docstring.

    Args:
        path: image file (any format Pillow reads: PNG, JPEG, TIFF, BMP, GIF, WebP, ...).
        max_side: longer-side limit in pixels; larger images are downsampled to it (rule 6).

    Returns:
        A new, fully loaded ``PIL.Image.Image`` of mode ``"RGB"`` (uint8 per channel, size
        (width, height) with ``max(width, height) <= max_side``), detached from the file.

    Raises:
        ImageLoadError: the file is missing, not a regular file, empty, not an image, truncated
            or corrupt, a 16-bit colour file, a float image with NaN/inf, of an unsupported mode,
            or too large for Pillow's decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``).
        ValueError: ``max_side`` < 1.
        RuntimeError: ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` was switched on by someone else
            (truncated files would then load silently grey-padded).
    """
    _check_max_side(max_side)
    spath = os.fspath(path)
    # Rule 1: a truncated file must fail loudly. Pillow pads truncated data with grey when this
    # global flag is on; we never turn it on, and refuse to run if another module did.
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise RuntimeError(
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True (set by some other module): truncated "
            "images would load silently padded; medprobe refuses to load images in this state"
        )
    _check_regular_nonempty(spath)
    try:
        with Image.open(spath) as opened:
            # Rule 3: multi-frame files -> the first frame (Image.open starts there; be explicit).
            if getattr(opened, "n_frames", 1) > 1:
                opened.seek(0)
            # Rule 1: full decode now, so truncation / corrupt data raises here.
            opened.load()
            _refuse_high_byte_only_colour(opened, spath)
            # Rule 2: EXIF orientation (returns a new image, detached from the file).
            img: Image.Image = ImageOps.exif_transpose(opened)
    except ImageLoadError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageLoadError(spath, f"too many pixels for Pillow's limit: {e}") from e
    except Image.UnidentifiedImageError as e:
        raise ImageLoadError(spath, "not a recognised image file (cannot identify format)") from e
    except Exception as e:  # any decoder failure is a property of the file, reported as such
        raise ImageLoadError(spath, f"cannot decode ({type(e).__name__}: {e})") from e

    # Rule 4: high bit depth -> 8 bit by the image's own maximum.
    if img.mode in HIGH_BIT_DEPTH_MODES:
        img = _scale_to_8bit(img, spath)
    # Rule 5: to RGB, alpha composited onto black.
    img = _to_rgb(img, spath)
    # Rule 6: downsample when the longer side exceeds max_side.
    new_size = _target_size(img.size, max_side)
    if new_size != img.size:
        img = img.resize(new_size, _RESAMPLE)
    return img


def scan_images(
    paths: Iterable[str | os.PathLike[str]],
    *,
    max_side: int = 1024,
    max_workers: int = 4,
    progress: bool = True,
) -> list[tuple[str, str]]:
    """Fully load every file with :func:`load_image` and report every bad one.

    Decoding runs in ``max_workers`` threads (Pillow releases the GIL while decoding); the
    decoded images are discarded at once.

    Args:
        paths: image files.
        max_side: as in :func:`load_image` (the same code path as feature extraction).
        max_workers: threads (>= 1).
        progress: show a tqdm bar "checking images".

    Returns:
        ``[(path, reason), ...]`` for EVERY file that raised :class:`ImageLoadError`, in input
        order; empty when all files load. Paths are returned as ``str``.

    Raises:
        ValueError: ``max_workers`` < 1 or ``max_side`` < 1.
        RuntimeError: as in :func:`load_image` (not a per-file problem, so not collected).
    """
    _check_max_side(max_side)
    if max_workers < 1:
        raise ValueError(f"max_workers must be >= 1, got {max_workers}")
    items = [os.fspath(p) for p in paths]

    def check(p: str) -> str | None:
        try:
            load_image(p, max_side=max_side)
        except ImageLoadError as e:
            return e.reason
        return None

    reasons: list[str | None] = []
    with (
        ThreadPoolExecutor(max_workers=max_workers) as pool,
        tqdm(total=len(items), desc="checking images", unit="img", disable=not progress) as bar,
    ):
        for r in pool.map(check, items):  # map keeps input order
            reasons.append(r)
            bar.update(1)
    return [(p, r) for p, r in zip(items, reasons, strict=True) if r is not None]


def loader_fingerprint(max_side: int) -> dict[str, Any]:
    """Everything about image loading that changes pixels, for the feature-cache key.

    Returns:
        A JSON-serialisable dict: loader version, ``max_side``, resampling filter, output mode
        and the Pillow version (decoders and the LANCZOS kernel live in Pillow, so an upgrade
        deliberately invalidates cached features).

    Raises:
        ValueError: ``max_side`` < 1.
    """
    _check_max_side(max_side)
    return {
        "loader": "medprobe.data.images",
        "loader_version": LOADER_VERSION,
        "max_side": int(max_side),
        "resample": _RESAMPLE.name,
        "high_bit_depth": "scale-by-max-round-half-up",
        "alpha": "composite-on-black",
        "output_mode": "RGB",
        "pillow": PIL.__version__,
    }


# ---------------------------------------------------------------------------------------------
# helpers


def _check_max_side(max_side: int) -> None:
    if isinstance(max_side, bool) or not isinstance(max_side, int | np.integer) or max_side < 1:
        raise ValueError(f"max_side must be an integer >= 1, got {max_side!r}")


def _check_regular_nonempty(path: str) -> None:
    """Rule 1: clear reasons for missing / non-regular / empty files (Pillow's are vaguer)."""
    try:
        st = os.stat(path)
    except FileNotFoundError as e:
        raise ImageLoadError(path, "file not found") from e
    except OSError as e:
        raise ImageLoadError(path, f"cannot stat file ({type(e).__name__}: {e})") from e
    if stat.S_ISDIR(st.st_mode):
        raise ImageLoadError(path, "is a directory, not an image file")
    if not stat.S_ISREG(st.st_mode):
        raise ImageLoadError(path, "not a regular file")
    if st.st_size == 0:
        raise ImageLoadError(path, "empty file (0 bytes)")


def _source_bits_per_sample(img: Image.Image, path: str) -> int | None:
    """Bits per sample as stored in the file (PNG IHDR, TIFF tag 258); None if unknown."""
    if img.format == "PNG":
        with open(path, "rb") as f:
            head = f.read(26)
        if len(head) == 26 and head[:8] == _PNG_SIGNATURE and head[12:16] == b"IHDR":
            return int(struct.unpack(">B", head[24:25])[0])
        return None
    if img.format == "TIFF":
        bits = getattr(img, "tag_v2", {}).get(258)
        if isinstance(bits, tuple | list) and bits:
            return int(max(bits))
        if isinstance(bits, int):
            return bits
    return None


def _refuse_high_byte_only_colour(img: Image.Image, path: str) -> None:
    """Rule 4: a >8-bit file that Pillow decoded to an 8-bit mode lost its low byte; refuse."""
    if img.mode in HIGH_BIT_DEPTH_MODES:
        return
    bits = _source_bits_per_sample(img, path)
    if bits is not None and bits > 8:
        raise ImageLoadError(
            path,
            f"{bits}-bit {img.format} opened by Pillow as 8-bit mode {img.mode} (only the high "
            "byte of each sample is kept, so scaling by the image's maximum is impossible); "
            "convert it to 16-bit greyscale or to 8-bit first",
        )


def _scale_to_8bit(img: Image.Image, path: str) -> Image.Image:
    """Rule 4 (paper, "Image Pre-processing": normalised to the image's maximum value).

    (h, w) integer or float pixels -> mode "L": ``floor(v' * 255 / max(v') + 0.5)`` with
    ``v' = v - min(v)`` when ``min(v) < 0`` else ``v``; max(v') == 0 -> all zeros.
    """
    a = np.asarray(img).astype(np.float64)
    if not np.isfinite(a).all():
        raise ImageLoadError(path, f"mode {img.mode} image contains NaN or infinite pixel values")
    lo = float(a.min()) if a.size else 0.0
    if lo < 0:
        a -= lo  # negative minimum (e.g. signed CT values): shift so the minimum becomes 0
    hi = float(a.max()) if a.size else 0.0
    if hi == 0:
        out = np.zeros(a.shape, dtype=np.uint8)  # constant zero image: no division by zero
    else:
        out = np.floor(a * 255.0 / hi + 0.5).astype(np.uint8)  # max -> exactly 255, no clip
    return Image.fromarray(out)


def _to_rgb(img: Image.Image, path: str) -> Image.Image:
    """Rule 5: any mode -> "RGB"; alpha / transparency composited onto black."""
    if img.mode == "RGB" and "transparency" not in img.info:
        return img
    has_alpha = img.mode in _ALPHA_MODES or "transparency" in img.info
    try:
        if has_alpha:
            # Black background: radiographs and fundus photographs have black surroundings.
            rgba = np.asarray(img.convert("RGBA"), dtype=np.uint16)
            # round(c * a / 255) exactly: c*a/255 is never k + 0.5 for integers c, a.
            rgb = (rgba[..., :3] * rgba[..., 3:4] + 127) // 255
            return Image.fromarray(rgb.astype(np.uint8))
        # 1 / L -> three identical channels; P / CMYK / YCbCr / LAB / HSV: Pillow's conversion.
        return img.convert("RGB")
    except (ValueError, OSError) as e:
        raise ImageLoadError(path, f"unsupported image mode {img.mode!r} ({e})") from e


def _target_size(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """Rule 6: (w, h) -> size with longer side == max_side if it exceeded it, aspect kept.

    The shorter side is ``round(short * max_side / long)``, round half up, at least 1 (integer
    arithmetic, no float error): 2048 x 1000 -> 1024 x 500; 1024 x 1024 unchanged.
    """
    w, h = size
    long_side = max(w, h)
    if long_side <= max_side:
        return size

    def scale(x: int) -> int:
        return max(1, (2 * x * max_side + long_side) // (2 * long_side))

    return (max_side, scale(h)) if w >= h else (scale(w), max_side)
