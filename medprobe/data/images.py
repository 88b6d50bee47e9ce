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

**Memory** (issue 14; none of this changes a pixel, so the loader version stays): a large,
non-interlaced PNG (8-bit grey, grey+alpha, RGB, RGBA or palette; 16-bit grey) is decoded in
strips of about 256 KiB and never held whole: each strip is composited (rule 5), resampled
horizontally by Pillow, and fed to a vertical LANCZOS pass that reproduces Pillow's fixed-point
arithmetic exactly (16-bit grey is decoded twice: once for its maximum, rule 4). Other formats
are decoded whole (JPEG's DCT-domain ``draft`` scaling would change pixels); their alpha is
composited in row blocks. :func:`scan_images` bounds the pixels decoded at once across its
threads by a budget in bytes estimated from each header. Pillow's decompression-bomb limit
(``Image.MAX_IMAGE_PIXELS``) stays the hard stop for every path.

**Files outside the dataset root**: :func:`check_inside_root` resolves every path (symlinks,
``..``) and refuses those that lead out of the root, unless explicitly allowed.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import stat
import struct
import threading
import zlib
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO, Any

import numpy as np
import PIL
from PIL import Image, ImageFile, ImageOps
from tqdm import tqdm

from medprobe.errors import DataError, ImageLoadError  # noqa: F401 (re-exported)

__all__ = [
    "LOADER_VERSION",
    "FAR_FROM_SQUARE",
    "RESIZE_MODES",
    "ImageLoadError",
    "check_inside_root",
    "far_from_square_share",
    "load_image",
    "load_image_bytes",
    "loader_fingerprint",
    "scan_images",
    "to_square",
]

#: Bump whenever a rule in this module changes what pixels come out (it keys the feature cache).
LOADER_VERSION = 1

#: Pillow modes holding more than 8 bits per sample (rule 4).
HIGH_BIT_DEPTH_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})

#: Modes whose alpha (or colour-key transparency) is composited onto black (rule 5).
_ALPHA_MODES = frozenset({"LA", "PA", "RGBA", "RGBa", "La"})

_RESAMPLE = Image.Resampling.LANCZOS
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

#: A PNG whose whole decoded image would take at least this many bytes is decoded in strips
#: (module docstring, "Memory"); smaller ones take the plain path, which is faster.
STREAM_MIN_BYTES = 32 << 20

#: Bytes of filtered PNG rows decoded per strip.
_STRIP_BYTES = 1 << 18

#: Default budget of :func:`scan_images`: bytes of decoded pixels held at once by its threads.
SCAN_DECODE_BUDGET = 512 << 20


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
    _check_truncated_flag()
    _check_regular_nonempty(spath)
    return _decode(spath, spath, max_side)


def load_image_bytes(data: bytes, name: str, max_side: int = 1024) -> Image.Image:
    """Load one encoded image held in memory (PNG, JPEG, ... bytes) as 8-bit RGB, applying
    every rule of the module docstring exactly as :func:`load_image` does for a file.

    For images stored inside a dataset (a Hugging Face ``datasets`` Image column: arrow files,
    parquet), so they reach the extractor without being written anywhere. The bytes are
    decoded whole (the strip decoding of large PNGs needs a file); the pixels are the same.

    Args:
        data: the encoded image, as a file would hold it.
        name: what messages call it (e.g. ``"org/dataset:train[17]"``).
        max_side: as in :func:`load_image`.

    Returns:
        as :func:`load_image`.

    Raises:
        ImageLoadError: ``data`` is empty or not a readable image (reasons as in
            :func:`load_image`), naming ``name``.
        ValueError, RuntimeError: as in :func:`load_image`.
    """
    _check_max_side(max_side)
    _check_truncated_flag()
    if not data:
        raise ImageLoadError(name, "empty image (0 bytes)")
    return _decode(bytes(data), name, max_side)


def _check_truncated_flag() -> None:
    # Rule 1: a truncated file must fail loudly. Pillow pads truncated data with grey when this
    # global flag is on; we never turn it on, and refuse to run if another module did.
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise RuntimeError(
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True (set by some other module): truncated "
            "images would load silently padded; medprobe refuses to load images in this state"
        )


def _decode(src: str | bytes, name: str, max_side: int) -> Image.Image:
    """Rules 1-6 on a file path (``str``) or on encoded bytes; ``name`` is used in errors."""
    try:
        with Image.open(src if isinstance(src, str) else io.BytesIO(src)) as opened:
            # header only; Pillow's bomb check runs here
            plan = _png_stream_plan(opened, src, max_side) if isinstance(src, str) else None
            if plan is not None:  # large PNG file: decoded in strips, never whole (same pixels)
                return _load_png_streamed(plan)
            # Rule 3: multi-frame files -> the first frame (Image.open starts there; be explicit).
            if getattr(opened, "n_frames", 1) > 1:
                opened.seek(0)
            # Rule 1: full decode now, so truncation / corrupt data raises here.
            opened.load()
            _refuse_high_byte_only_colour(opened, name, src)
            # Rule 2: EXIF orientation (returns a new image, detached from the file).
            img: Image.Image = ImageOps.exif_transpose(opened)
    except ImageLoadError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageLoadError(name, f"too many pixels for Pillow's limit: {e}") from e
    except Image.UnidentifiedImageError as e:
        raise ImageLoadError(name, "not a recognised image file (cannot identify format)") from e
    except Exception as e:  # any decoder failure is a property of the file, reported as such
        raise ImageLoadError(name, f"cannot decode ({type(e).__name__}: {e})") from e

    # Rule 4: high bit depth -> 8 bit by the image's own maximum.
    if img.mode in HIGH_BIT_DEPTH_MODES:
        img = _scale_to_8bit(img, name)
    # Rule 5: to RGB, alpha composited onto black.
    img = _to_rgb(img, name)
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
    max_decoded_bytes: int = SCAN_DECODE_BUDGET,
) -> list[tuple[str, str]]:
    """Fully load every file with :func:`load_image` and report every bad one.

    Decoding runs in ``max_workers`` threads (Pillow releases the GIL while decoding); the
    decoded images are discarded at once. The threads share a budget of decoded bytes: each
    file reserves the size of its whole decoded image (width x height x bytes per pixel, read
    from the header) before it is loaded, and waits while the others hold too much; files
    larger than the whole budget are decoded one at a time by the calling thread once the
    others are done. Peak memory is thus bounded by about ``max_decoded_bytes`` however many
    threads run, and does not grow with them for huge images (``benchmarks/
    bench_decode_memory.py``).

    Args:
        paths: image files.
        max_side: as in :func:`load_image` (the same code path as feature extraction).
        max_workers: threads (>= 1).
        progress: show a tqdm bar "checking images".
        max_decoded_bytes: the budget (>= 1), default :data:`SCAN_DECODE_BUDGET` (512 MiB).

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
    if max_decoded_bytes < 1:
        raise ValueError(f"max_decoded_bytes must be >= 1, got {max_decoded_bytes}")
    items = [os.fspath(p) for p in paths]
    budget = _DecodeBudget(max_decoded_bytes)

    def check(p: str, cost: int) -> str | None:
        try:
            with budget.reserve(cost):
                load_image(p, max_side=max_side)
        except ImageLoadError as e:
            return e.reason
        return None

    reasons: list[str | None] = [None] * len(items)
    with (
        ThreadPoolExecutor(max_workers=max_workers) as pool,
        tqdm(total=len(items), desc="checking images", unit="img", disable=not progress) as bar,
    ):
        costs = list(pool.map(_decoded_bytes, items))  # headers only
        # An image over the whole budget is decoded alone, and always by this thread: the C
        # allocator keeps freed memory per thread (glibc arenas), so huge decodes spread over
        # the pool's threads would leave each thread holding its own high-water mark.
        alone = [i for i, c in enumerate(costs) if c >= max_decoded_bytes]
        shared = [i for i, c in enumerate(costs) if c < max_decoded_bytes]
        for i, r in zip(
            shared,
            pool.map(check, [items[i] for i in shared], [costs[i] for i in shared]),
            strict=True,
        ):
            reasons[i] = r
            bar.update(1)
        for i in alone:
            reasons[i] = check(items[i], costs[i])
            bar.update(1)
    return [(p, r) for p, r in zip(items, reasons, strict=True) if r is not None]


def check_inside_root(
    paths: Iterable[str | os.PathLike[str]],
    root: str | os.PathLike[str],
    *,
    allow_outside: bool = False,
    how_to_allow: str = "unless outside paths are allowed explicitly",
) -> list[tuple[str, str]]:
    """Resolve every image path (symlinks, ``..``) and refuse those that lead out of ``root``.

    A symlink inside the dataset to a file or folder elsewhere, or a manifest entry such as
    PadChest's ``ImageDir`` of ``../secret``, would otherwise be read and cached without a word.

    Args:
        paths: image paths (absolute, or relative to the working directory); missing files
            resolve as far as they exist (they are reported by the image scan, not here).
        root: the dataset root; resolved the same way (a root that is itself a symlink is
            fine: only where the images lead matters).
        allow_outside: return the outside paths instead of raising (the pipeline records them,
            e.g. under ``data.allow_outside_root``).
        how_to_allow: the clause of the error that says how to read them anyway (the
            pipeline names its config key).

    Returns:
        ``[(path, resolved path), ...]`` of every path outside the root, in input order; empty
        when all are inside.

    Raises:
        DataError: some paths lie outside the root and ``allow_outside`` is False: one line
            per file (``path -> resolved``), all listed at once.
    """
    base = os.path.realpath(os.fspath(root))
    outside: list[tuple[str, str]] = []
    for p in paths:
        sp = os.fspath(p)
        real = os.path.realpath(sp)
        if real != base and not real.startswith(base.rstrip(os.sep) + os.sep):
            outside.append((sp, real))
    if outside and not allow_outside:
        lines = "\n".join(f"  {p} -> {r}" for p, r in outside)
        raise DataError(
            f"{len(outside)} image path(s) lead outside the dataset root {base} (through a "
            f"symlink or '..'); medprobe refuses to read them {how_to_allow}:\n{lines}"
        )
    return outside


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


#: ``model.resize`` values (:class:`medprobe.config.ResizeMode`), in the order documented.
RESIZE_MODES = ("crop", "pad", "squash")

#: Aspect ratio (longer side / shorter side) from which an image counts as far from square.
FAR_FROM_SQUARE = 1.5


def to_square(image: Image.Image, mode: str) -> Image.Image:
    """Make a loaded image square as ``model.resize`` says, before the extractor's own
    preprocessing (issue 14, item 5).

    Args:
        image: an image from :func:`load_image` (mode ``"RGB"``, size (width, height)).
        mode: ``crop``: returned unchanged (the extractor's own preprocessing decides, as its
            weights were trained: EfficientNet and CLIP centre-crop the shorter side's square);
            ``pad``: pasted centred on a black square of side ``max(width, height)`` (every
            pixel kept, unchanged; an odd margin puts the extra pixel right/bottom);
            ``squash``: resized (LANCZOS) to ``max(width, height)`` square, ignoring the
            aspect ratio (every pixel contributes, shapes are stretched).

    Returns:
        ``image`` itself for ``crop`` or an already square image; else a new square image of
        the same mode.

    Raises:
        ValueError: ``mode`` is not one of :data:`RESIZE_MODES`.
    """
    mode = str(mode)
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize mode {mode!r}: expected one of {list(RESIZE_MODES)}")
    w, h = image.size
    if mode == "crop" or w == h:
        return image
    side = max(w, h)
    if mode == "squash":
        return image.resize((side, side), _RESAMPLE)
    out = Image.new(image.mode, (side, side))  # zeros: black
    out.paste(image, ((side - w) // 2, (side - h) // 2))
    return out


def far_from_square_share(
    paths: Iterable[str | os.PathLike[str] | IO[bytes]], ratio: float = FAR_FROM_SQUARE
) -> float | None:
    """Share of the images whose longer side is at least ``ratio`` times the shorter one.

    Reads only each file's header (``Image.open(...).size``, no pixel decoding; EXIF rotation
    does not change the ratio). Files that cannot be opened are left out of the share (the
    image scan reports them). An item may also be a binary file object (an image held in
    memory, e.g. ``io.BytesIO`` over a dataset row's bytes).

    Returns:
        the share in [0, 1], or None when no file could be read.
    """
    n = far = 0
    for p in paths:
        try:
            with Image.open(p if hasattr(p, "read") else os.fspath(p)) as im:  # type: ignore[arg-type]
                w, h = im.size
        except Exception:  # noqa: BLE001 (unreadable files are the scan's to report)
            continue
        if min(w, h) <= 0:
            continue
        n += 1
        far += max(w, h) >= ratio * min(w, h)
    return far / n if n else None


# ---------------------------------------------------------------------------------------------
# helpers


class _DecodeBudget:
    """Bytes of decoded pixels that the scan's threads may hold at once (a counting lock)."""

    def __init__(self, limit: int) -> None:
        self.limit = int(limit)
        self.used = 0
        self.cond = threading.Condition()

    @contextlib.contextmanager
    def reserve(self, cost: int) -> Iterator[None]:
        cost = min(max(0, int(cost)), self.limit)  # a larger image waits to run alone
        with self.cond:
            while self.used and self.used + cost > self.limit:
                self.cond.wait()
            self.used += cost
        try:
            yield
        finally:
            with self.cond:
                self.used -= cost
                self.cond.notify_all()


#: Bytes per pixel of Pillow's in-memory modes (everything else: 4).
_MODE_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}


def _decoded_bytes(path: str) -> int:
    """Bytes of ``path``'s whole decoded image, from its header (0 if it cannot be read:
    :func:`load_image` then reports why)."""
    try:
        with Image.open(path) as img:
            w, h = img.size
            return int(w) * int(h) * _MODE_BYTES.get(img.mode, 4)
    except Exception:  # noqa: BLE001 (any failure is load_image's to report)
        return 0


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


def _source_bits_per_sample(img: Image.Image, src: str | bytes) -> int | None:
    """Bits per sample as stored in the file or bytes ``src`` (PNG IHDR, TIFF tag 258); None
    if unknown."""
    if img.format == "PNG":
        if isinstance(src, bytes):
            head = src[:26]
        else:
            with open(src, "rb") as f:
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


def _refuse_high_byte_only_colour(
    img: Image.Image, path: str, src: str | bytes | None = None
) -> None:
    """Rule 4: a >8-bit file that Pillow decoded to an 8-bit mode lost its low byte; refuse.
    ``src``: the file or encoded bytes (default ``path``); ``path`` names it in the error."""
    if img.mode in HIGH_BIT_DEPTH_MODES:
        return
    bits = _source_bits_per_sample(img, path if src is None else src)
    if bits is not None and bits > 8:
        raise ImageLoadError(
            path,
            f"{bits}-bit {img.format} opened by Pillow as 8-bit mode {img.mode} (only the high "
            "byte of each sample is kept, so scaling by the image's maximum is impossible); "
            "convert it to 16-bit greyscale or to 8-bit first",
        )


def _scale_to_8bit(
    img: Image.Image, path: str, lo_hi: tuple[float, float] | None = None
) -> Image.Image:
    """Rule 4 (paper, "Image Pre-processing": normalised to the image's maximum value).

    (h, w) integer or float pixels -> mode "L": ``floor(v' * 255 / max(v') + 0.5)`` with
    ``v' = v - min(v)`` when ``min(v) < 0`` else ``v``; max(v') == 0 -> all zeros. ``lo_hi``:
    the (min, max) of the whole image when ``img`` is one strip of it.
    """
    a = np.asarray(img).astype(np.float64)
    if not np.isfinite(a).all():
        raise ImageLoadError(path, f"mode {img.mode} image contains NaN or infinite pixel values")
    if lo_hi is None:
        lo_hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    lo, hi = lo_hi
    if lo < 0:
        a -= lo  # negative minimum (e.g. signed CT values): shift so the minimum becomes 0
        hi -= lo  # == max(v - lo): subtraction is monotonic, so is its rounding
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
            return Image.fromarray(_composite_on_black(np.asarray(img.convert("RGBA"))))
        # 1 / L -> three identical channels; P / CMYK / YCbCr / LAB / HSV: Pillow's conversion.
        return img.convert("RGB")
    except (ValueError, OSError) as e:
        raise ImageLoadError(path, f"unsupported image mode {img.mode!r} ({e})") from e


def _composite_on_black(rgba: np.ndarray) -> np.ndarray:
    """Rule 5: (h, w, 4) uint8 RGBA -> (h, w, 3) uint8 ``round(c * a / 255)``, in row blocks
    of about 1 MiB (the uint16 products never exist for the whole image)."""
    h, w = rgba.shape[:2]
    out = np.empty((h, w, 3), dtype=np.uint8)
    step = max(1, (1 << 20) // max(1, 4 * w))
    for y in range(0, h, step):
        block = rgba[y : y + step]
        alpha = block[..., 3]
        lo, hi = int(alpha.min()), int(alpha.max())
        if lo == 255:  # opaque: round(c * 255 / 255) == c
            out[y : y + step] = block[..., :3]
        elif hi == 0:  # transparent: black
            out[y : y + step] = 0
        else:
            rgb = block[..., :3].astype(np.uint16)
            rgb *= block[..., 3:4]
            rgb += 127
            rgb //= 255  # round(c * a / 255) exactly: c*a/255 is never k + 0.5 for ints c, a
            out[y : y + step] = rgb
    return out


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


# ---------------------------------------------------------------------------------------------
# memory-safe decoding of large PNGs (module docstring, "Memory")

#: (colour type, bit depth) of the PNGs decoded in strips -> samples per pixel.
_STREAMED_PNG = {(0, 8): 1, (2, 8): 3, (3, 8): 1, (4, 8): 2, (6, 8): 4, (0, 16): 1}


@dataclass(frozen=True)
class _PngPlan:
    path: str
    size: tuple[int, int]  # (w, h)
    target: tuple[int, int]
    colour_type: int
    bit_depth: int
    row_bytes: int  # unfiltered bytes per row
    idat: tuple[tuple[int, int], ...]  # (offset, length) of every IDAT chunk's data
    header: bytes  # IHDR minus its height, PLTE and tRNS chunks: rebuild one PNG per strip


def _png_chunks(f: io.BufferedReader) -> Iterator[tuple[bytes, int, int]]:
    """(type, data offset, length) of each chunk of an open PNG, up to IEND (headers only)."""
    f.seek(8)
    while True:
        head = f.read(8)
        if len(head) < 8:
            return
        length, ctype = struct.unpack(">I4s", head)
        pos = f.tell()
        yield ctype, pos, length
        if ctype == b"IEND":
            return
        f.seek(pos + length + 4)


def _chunk(ctype: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + ctype + data + struct.pack(">I", zlib.crc32(ctype + data))


def _png_stream_plan(img: Image.Image, path: str, max_side: int) -> _PngPlan | None:
    """A plan to decode ``img`` (opened, not loaded) in strips, or None for the plain path:
    not a PNG, small, interlaced, animated, of another colour type / bit depth, or with an
    EXIF orientation (rule 2 rotates before resampling, which the strips cannot)."""
    if img.format != "PNG" or img.info.get("interlace"):
        return None
    w, h = img.size
    target = _target_size((w, h), max_side)
    if target == (w, h) or w * h * (2 if img.mode.startswith("I;16") else 4) < STREAM_MIN_BYTES:
        return None
    with open(path, "rb") as f:
        if f.read(8) != _PNG_SIGNATURE:
            return None
        ihdr = b""
        extra: list[bytes] = []
        idat: list[tuple[int, int]] = []
        for ctype, pos, length in _png_chunks(f):  # type: ignore[arg-type]
            if ctype in (b"acTL", b"fcTL", b"fdAT"):
                return None  # animated: rule 3 is Pillow's business
            if ctype == b"IHDR" and length == 13:
                f.seek(pos)
                ihdr = f.read(13)
            elif ctype in (b"PLTE", b"tRNS") and not idat:
                f.seek(pos)
                extra.append(_chunk(ctype, f.read(length)))
            elif ctype == b"eXIf":
                f.seek(pos)
                exif = Image.Exif()
                exif.load(f.read(length))
                if exif.get(0x0112, 1) != 1:
                    return None
            elif ctype == b"IDAT":
                idat.append((pos, length))
    if len(ihdr) != 13 or not idat:
        return None
    pw, ph, depth, ctype_, comp, filt, interlace = struct.unpack(">IIBBBBB", ihdr)
    samples = _STREAMED_PNG.get((ctype_, depth))
    if samples is None or (pw, ph) != (w, h) or comp or filt or interlace:
        return None
    return _PngPlan(
        path=path,
        size=(w, h),
        target=target,
        colour_type=ctype_,
        bit_depth=depth,
        row_bytes=w * samples * depth // 8,
        idat=tuple(idat),
        header=b"".join(extra),
    )


def _png_strips(plan: _PngPlan) -> Iterator[Image.Image]:
    """The image of ``plan`` as consecutive strips of rows, each a loaded Pillow image of the
    file's own mode (palette and transparency kept), about 256 KiB of rows at a time.

    The compressed data is inflated incrementally; each strip's filtered rows are wrapped in a
    small PNG of their own (stored, not compressed) that Pillow decodes as it would the file.
    PNG filters refer to the row above, so every strip but the first is preceded by the last
    row of the previous strip, unfiltered and marked filter 0, and that row is cropped off.

    Raises:
        ImageLoadError: corrupt or truncated compressed data, or missing rows.
    """
    w, h = plan.size
    stride = plan.row_bytes + 1  # filter byte + row
    rows_per_strip = max(1, _STRIP_BYTES // stride)
    inflate = zlib.decompressobj()

    def filtered() -> Iterator[bytes]:
        with open(plan.path, "rb") as f:
            for pos, length in plan.idat:
                f.seek(pos)
                left = length
                while left > 0:
                    data = f.read(min(left, 1 << 20))
                    if not data:
                        return
                    left -= len(data)
                    while data:
                        out = inflate.decompress(data, _STRIP_BYTES)
                        data = inflate.unconsumed_tail
                        yield out
                        if inflate.eof:
                            return

    pending = bytearray()
    prev: bytes | None = None
    y = 0
    source = filtered()
    try:
        while y < h:
            n = min(rows_per_strip, h - y)
            while len(pending) < n * stride:
                chunk = next(source, None)
                if chunk is None:
                    raise ImageLoadError(
                        plan.path, f"cannot decode (truncated PNG data: {y} of {h} rows)"
                    )
                pending += chunk
            rows = bytes(pending[: n * stride])
            del pending[: n * stride]
            lead = b"" if prev is None else b"\x00" + prev
            m = n + (prev is not None)
            png = (
                _PNG_SIGNATURE
                + _chunk(
                    b"IHDR",
                    struct.pack(">II", w, m) + bytes([plan.bit_depth, plan.colour_type, 0, 0, 0]),
                )
                + plan.header
                + _chunk(b"IDAT", zlib.compress(lead + rows, 0))
                + _chunk(b"IEND", b"")
            )
            del rows, lead
            with Image.open(io.BytesIO(png)) as part:
                part.load()
                del png
                strip = part.crop((0, 1, w, m)) if prev is not None else part.copy()
                last = np.asarray(part.crop((0, m - 1, w, m)))[0]
            prev = (last.astype(">u2") if plan.bit_depth == 16 else last).tobytes()
            y += n
            yield strip
    except zlib.error as e:
        raise ImageLoadError(plan.path, f"cannot decode (corrupt PNG data: {e})") from e


def _lanczos_coeffs(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pillow's LANCZOS resampling weights for one axis (``src/libImaging/Resample.c``,
    ``precompute_coeffs`` + ``normalize_coeffs_8bpc``), bit for bit: the same double-precision
    arithmetic in the same order (libm ``sin``), rounded to 22-bit fixed point.

    Returns:
        ``(first, count, weights)``: output pixel ``i`` reads input ``first[i] : first[i] +
        count[i]`` with int64 ``weights[i, :count[i]]`` (zero beyond).
    """
    support_base = 3.0
    scale = float(in_size) / out_size
    filterscale = max(scale, 1.0)
    support = support_base * filterscale
    ksize = int(math.ceil(support)) * 2 + 1
    inv = 1.0 / filterscale

    def sinc(x: float) -> float:
        if x == 0.0:
            return 1.0
        x = x * math.pi
        return math.sin(x) / x

    def lanczos(x: float) -> float:
        if -3.0 <= x < 3.0:
            return sinc(x) * sinc(x / 3)
        return 0.0

    first = np.zeros(out_size, dtype=np.int64)
    count = np.zeros(out_size, dtype=np.int64)
    weights = np.zeros((out_size, ksize), dtype=np.int64)
    one = float(1 << 22)
    for xx in range(out_size):
        center = 0.0 + (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size) - xmin
        k = [lanczos((x + xmin - center + 0.5) * inv) for x in range(xmax)]
        ww = 0.0
        for v in k:
            ww += v
        if ww != 0.0:
            k = [v / ww for v in k]
        first[xx], count[xx] = xmin, xmax
        for x, v in enumerate(k):
            weights[xx, x] = int(-0.5 + v * one) if v < 0 else int(0.5 + v * one)
    return first, count, weights


class _VerticalLanczos:
    """Pillow's vertical LANCZOS pass (8 bits per channel) over rows that arrive in strips.

    Output row ``i`` is ``clip(floor((2**21 + sum_k w[i, k] * row[first[i] + k]) / 2**22), 0,
    255)``, as in Pillow's ``_ImagingResampleVertical_8bpc``. The sums are computed in float64,
    which is exact here (integer products below 2**31, sums below 2**53), so BLAS can do them.
    Only the input rows that later outputs still need are kept (as uint8).
    """

    def __init__(self, in_h: int, out_h: int, width: int, channels: int) -> None:
        self.first, self.count, self.weights = _lanczos_coeffs(in_h, out_h)
        self.shape = (width, channels)
        self.buf = np.zeros((0, width * channels), dtype=np.uint8)
        self.buf_start = 0  # input row of self.buf[0]
        self.next_out = 0

    @property
    def done(self) -> bool:
        return self.next_out == len(self.first)

    def push(self, rows: np.ndarray) -> np.ndarray:
        """Feed the next input rows, (n, width, channels) uint8; returns the output rows they
        complete, (k, width, channels) uint8 (k may be 0)."""
        flat = rows.reshape(rows.shape[0], -1)
        self.buf = np.concatenate([self.buf, flat]) if self.buf.shape[0] else flat
        end = self.buf_start + self.buf.shape[0]
        start = stop = self.next_out
        while stop < len(self.first) and self.first[stop] + self.count[stop] <= end:
            stop += 1
        out = np.empty((stop - start, self.buf.shape[1]), dtype=np.uint8)
        if stop > start:
            lo = int(self.first[start])
            hi = max(int(self.first[i] + self.count[i]) for i in range(start, stop))
            kmat = np.zeros((stop - start, hi - lo), dtype=np.float64)
            for j, i in enumerate(range(start, stop)):
                a, c = int(self.first[i]) - lo, int(self.count[i])
                kmat[j, a : a + c] = self.weights[i, :c]
            window = self.buf[lo - self.buf_start : hi - self.buf_start]
            step = max(1, (1 << 19) // max(1, hi - lo))  # float64 copies of ~4 MiB at most
            for c0 in range(0, window.shape[1], step):
                acc = kmat @ window[:, c0 : c0 + step].astype(np.float64) + float(1 << 21)
                out[:, c0 : c0 + step] = np.clip(np.floor(acc / float(1 << 22)), 0, 255)
            self.next_out = stop
        if not self.done:  # drop rows no later output reads
            drop = max(0, int(self.first[self.next_out :].min()) - self.buf_start)
            if drop:
                self.buf = self.buf[drop:]
                self.buf_start += drop
        return out.reshape(stop - start, *self.shape)


def _vertical_first(size: tuple[int, int], target: tuple[int, int]) -> bool:
    """Pillow's pass order (``ImagingResampleInner``, Pillow 13): the vertical pass runs first
    when the height shrinks by more than twice as many pixels as the width; its rounding to
    8 bits between the passes makes the order part of the result."""
    (w, h), (tw, th) = size, target
    return h - th > 0 and h - th > (w - tw) * 2


def _load_png_streamed(plan: _PngPlan) -> Image.Image:
    """Rules 4-6 applied strip by strip to a large PNG: the pixels of the plain path (the
    horizontal pass is Pillow's own, the vertical one reproduces Pillow's exactly, in Pillow's
    order)."""
    w, h = plan.size
    tw, th = plan.target
    lo_hi: tuple[float, float] | None = None
    if plan.bit_depth == 16:  # rule 4 needs the image's maximum first: one extra pass
        lo, hi = math.inf, -math.inf
        for strip in _png_strips(plan):
            a = np.asarray(strip)
            lo, hi = min(lo, float(a.min())), max(hi, float(a.max()))
        lo_hi = (lo, hi)

    def horizontal(rows: np.ndarray) -> np.ndarray:  # Pillow's horizontal pass alone
        if tw == w or rows.shape[0] == 0:
            return rows
        return np.asarray(Image.fromarray(rows).resize((tw, rows.shape[0]), _RESAMPLE))

    v_first = _vertical_first((w, h), (tw, th))
    vertical = _VerticalLanczos(h, th, w if v_first else tw, 3) if th != h else None
    out = np.empty((th, tw, 3), dtype=np.uint8)
    y = 0
    for strip in _png_strips(plan):
        if lo_hi is not None:
            strip = _scale_to_8bit(strip, plan.path, lo_hi)
        rgb = np.asarray(_to_rgb(strip, plan.path))
        del strip
        if vertical is None:
            rows = horizontal(rgb)
        elif v_first:
            rows = horizontal(vertical.push(rgb))
        else:
            rows = vertical.push(horizontal(rgb))
        if rows.shape[0]:
            out[y : y + rows.shape[0]] = rows
            y += rows.shape[0]
    if y != th:
        raise ImageLoadError(plan.path, "cannot decode (fewer rows than the PNG header says)")
    return Image.fromarray(out)
