"""Image-loading rules (medprobe.data.images) on real files from ../shared/data and crafted ones."""

from __future__ import annotations

import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO, SHARED_DATA, needs_shared_data
from PIL import Image, ImageFile

from medprobe.data.images import (
    LOADER_VERSION,
    ImageLoadError,
    far_from_square_share,
    load_image,
    loader_fingerprint,
    scan_images,
    to_square,
)

DATA = SHARED_DATA
needs_data = needs_shared_data


def _data(rel: str) -> Path:
    assert DATA is not None
    return DATA / rel


def _png_bytes(width: int, height: int, bit_depth: int, color_type: int, raw: bytes) -> bytes:
    """A minimal valid PNG (filter 0 on every row), for modes Pillow cannot write."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + tag
            + data
            + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


# ------------------------------------------------------------------------------- real files


@needs_data
@pytest.mark.parametrize(
    "rel",
    [
        "T1_crc/tiles/STR-TCGA-AAMALCER.tif",
        "T1_crc/tiles/BACK-TCGA-ACTQDGTI.jpg",
        "T1_crc/tiles/ADI-TCGA-EENSRDNW.png",
    ],
)
def test_crc_tiles_load_as_224_rgb(rel: str) -> None:
    path = _data(rel)
    im = load_image(path)
    assert im.mode == "RGB"
    assert im.size == (224, 224)
    a = np.asarray(im)
    assert a.dtype == np.uint8 and a.shape == (224, 224, 3)
    with Image.open(path) as raw:  # already 8-bit RGB: pixels untouched
        assert np.array_equal(a, np.asarray(raw.convert("RGB")))


@needs_data
def test_grey_knee_becomes_three_identical_channels() -> None:
    path = _data("T8_knee_kl/test/0/9290697R.png")
    with Image.open(path) as raw:
        assert raw.mode == "L" and raw.size == (224, 224)
        grey = np.asarray(raw).copy()
    a = np.asarray(load_image(path))
    assert a.shape == (224, 224, 3)
    for c in range(3):
        assert np.array_equal(a[..., c], grey)  # 8-bit: no rescaling


@needs_data
def test_fullres_chest_xray_1024_grey_is_kept_as_is() -> None:
    path = _data("T7_cxr_nih/fullres/00000002_000.png")
    with Image.open(path) as raw:
        # the real file: 8-bit grey, exactly 1024 x 1024, maximum 250 (not 255)
        assert raw.mode == "L" and raw.size == (1024, 1024)
        grey = np.asarray(raw).copy()
    assert grey.max() == 250
    im = load_image(path)
    assert im.mode == "RGB" and im.size == (1024, 1024)  # exactly max_side: not resized
    a = np.asarray(im)
    assert a.max() == 250  # 8-bit: not stretched to 255
    assert all(np.array_equal(a[..., c], grey) for c in range(3))
    small = load_image(path, max_side=512)  # larger than max_side: downsampled, grey stays grey
    b = np.asarray(small)
    assert small.size == (512, 512)
    assert np.array_equal(b[..., 0], b[..., 1]) and np.array_equal(b[..., 1], b[..., 2])
    assert abs(float(b.mean()) - float(grey.mean())) < 1.0


@needs_data
def test_scan_images_all_real_files_clean() -> None:
    files = sorted(_data("T8_knee_kl").rglob("*.png"))
    assert len(files) == 100
    assert scan_images(files, progress=False) == []


# ------------------------------------------------------------------------------- bad files


def _bad_files(tmp_path: Path) -> dict[str, Path]:
    good_jpg = tmp_path / "good.jpg"
    good_png = tmp_path / "good.png"
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, size=(64, 80, 3), dtype=np.uint8)
    Image.fromarray(noise).save(good_jpg, quality=95)
    Image.fromarray(noise).save(good_png)
    bad: dict[str, Path] = {}
    for name, src in (("trunc.jpg", good_jpg), ("trunc.png", good_png)):
        data = src.read_bytes()
        (tmp_path / name).write_bytes(data[: len(data) // 2])
        bad[name] = tmp_path / name
    bad["empty.png"] = tmp_path / "empty.png"
    bad["empty.png"].write_bytes(b"")
    bad["text.png"] = tmp_path / "text.png"
    bad["text.png"].write_text("this is not an image\n")
    bad["missing.png"] = tmp_path / "missing.png"
    return bad


@pytest.mark.parametrize(
    ("name", "reason_part"),
    [
        ("trunc.jpg", "truncated"),
        ("trunc.png", "truncated"),
        ("empty.png", "empty file"),
        ("text.png", "not a recognised image"),
        ("missing.png", "file not found"),
    ],
)
def test_bad_files_raise_with_path(tmp_path: Path, name: str, reason_part: str) -> None:
    path = _bad_files(tmp_path)[name]
    with pytest.raises(ImageLoadError) as info:
        load_image(path)
    err = info.value
    assert err.path == str(path)
    assert reason_part in err.reason
    msg = str(err)
    assert msg.startswith(f"{path}: ") and "\n" not in msg
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_directory_is_not_an_image(tmp_path: Path) -> None:
    with pytest.raises(ImageLoadError, match="directory"):
        load_image(tmp_path)


def test_error_pickles(tmp_path: Path) -> None:
    err = ImageLoadError(tmp_path / "x.png", "file not found")
    back = pickle.loads(pickle.dumps(err))
    assert (back.path, back.reason, str(back)) == (err.path, err.reason, str(err))


def test_scan_images_reports_every_bad_file_in_order(tmp_path: Path) -> None:
    bad = _bad_files(tmp_path)
    good = [tmp_path / "good.jpg", tmp_path / "good.png"]
    order = [good[0], bad["trunc.png"], bad["missing.png"], good[1], bad["empty.png"]]
    order += [bad["text.png"], bad["trunc.jpg"]]
    report = scan_images(order, max_workers=3, progress=False)
    expected = [bad[k] for k in ("trunc.png", "missing.png", "empty.png", "text.png", "trunc.jpg")]
    assert [p for p, _ in report] == [str(p) for p in expected]
    assert all(isinstance(r, str) and r for _, r in report)
    assert scan_images(good, progress=False) == []


def test_refuses_when_truncated_loading_enabled(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    with pytest.raises(RuntimeError, match="LOAD_TRUNCATED_IMAGES"):
        load_image(tmp_path / "a.png")


# ------------------------------------------------------------------------------- bit depth


def test_16bit_png_scaled_by_own_maximum(tmp_path: Path) -> None:
    values = np.array([[0, 1, 8, 16, 2047, 2048, 4095, 4095]], dtype=np.uint16)
    path = tmp_path / "g16.png"
    Image.fromarray(values).save(path)
    with Image.open(path) as raw:
        assert raw.mode == "I;16"
    a = np.asarray(load_image(path))
    # floor(v * 255 / 4095 + 0.5): 8 -> 0.498 -> 0, 16 -> 0.996 -> 1, 2048 -> 127.53 -> 128
    expected = np.array([0, 0, 0, 1, 127, 128, 255, 255], dtype=np.uint8)
    assert np.array_equal(a[0, :, 0], expected)
    assert np.array_equal(a[..., 0], a[..., 2])


def test_16bit_above_255_never_clipped(tmp_path: Path) -> None:
    values = np.array([[300, 600, 60000]], dtype=np.uint16)
    path = tmp_path / "wide.png"
    Image.fromarray(values).save(path)
    a = np.asarray(load_image(path))[0, :, 0]
    assert a.tolist() == [1, 3, 255]  # 300*255/60000 = 1.275, 600 -> 2.55


def test_constant_zero_16bit_stays_zero(tmp_path: Path) -> None:
    path = tmp_path / "zero.png"
    Image.fromarray(np.zeros((5, 7), dtype=np.uint16)).save(path)
    a = np.asarray(load_image(path))
    assert a.shape == (5, 7, 3) and not a.any()


def test_float_tiff_negative_minimum_is_shifted(tmp_path: Path) -> None:
    path = tmp_path / "f.tif"
    Image.fromarray(np.array([[-100.0, 0.0, 100.0, 27.5]], dtype=np.float32)).save(path)
    with Image.open(path) as raw:
        assert raw.mode == "F"
    a = np.asarray(load_image(path))[0, :, 0]
    # v - min = [0, 100, 200, 127.5] -> * 255 / 200 = [0, 127.5, 255, 162.56] -> round half up
    assert a.tolist() == [0, 128, 255, 163]


def test_int32_image_scaled(tmp_path: Path) -> None:
    path = tmp_path / "i.tif"
    Image.fromarray(np.array([[0, 50, 100]], dtype=np.int32)).save(path)
    with Image.open(path) as raw:
        assert raw.mode == "I"
    assert np.asarray(load_image(path))[0, :, 0].tolist() == [0, 128, 255]


def test_float_nan_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "nan.tif"
    Image.fromarray(np.array([[0.0, np.nan]], dtype=np.float32)).save(path)
    with pytest.raises(ImageLoadError, match="NaN"):
        load_image(path)


def test_16bit_colour_png_refused(tmp_path: Path) -> None:
    px = np.array([[[4095, 2048, 0], [1, 2, 3]]], dtype=">u2")
    raw = b"".join(b"\x00" + row.tobytes() for row in px)
    path = tmp_path / "rgb16.png"
    path.write_bytes(_png_bytes(2, 1, 16, 2, raw))
    with pytest.raises(ImageLoadError, match="16-bit PNG"):
        load_image(path)


def test_8bit_not_rescaled(tmp_path: Path) -> None:
    path = tmp_path / "dark.png"
    Image.fromarray(np.array([[0, 10, 20]], dtype=np.uint8)).save(path)
    assert np.asarray(load_image(path))[0, :, 0].tolist() == [0, 10, 20]


# ------------------------------------------------------------------------------- orientation


def test_exif_orientation_6_rotates(tmp_path: Path) -> None:
    # stored 60 wide x 40 high, a red 16x16 block in the stored top-left corner, rest blue
    a = np.zeros((40, 60, 3), dtype=np.uint8)
    a[..., 2] = 255
    a[:16, :16] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / "o6.jpg"
    Image.fromarray(a).save(path, exif=exif, quality=95)
    im = load_image(path)
    assert im.size == (40, 60)  # width and height swapped
    b = np.asarray(im).astype(int)
    # after a 90 degree clockwise turn the stored top-left corner is the top-right corner
    assert np.abs(b[4, 35] - (255, 0, 0)).max() < 30
    assert np.abs(b[4, 4] - (0, 0, 255)).max() < 30
    assert np.abs(b[55, 35] - (0, 0, 255)).max() < 30


def test_multiframe_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("L", (8, 6), v) for v in (10, 200)]
    path = tmp_path / "two.tif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    with Image.open(path) as raw:
        assert raw.n_frames == 2
    a = np.asarray(load_image(path))
    assert a.shape == (6, 8, 3) and (a == 10).all()


# ------------------------------------------------------------------------------- modes


def test_cmyk_jpeg(tmp_path: Path) -> None:
    c = np.zeros((16, 32, 4), dtype=np.uint8)
    c[:, 16:, 0] = 255  # right half pure cyan, left half no ink (white)
    path = tmp_path / "cmyk.jpg"
    Image.fromarray(c, mode="CMYK").save(path, quality=100)
    with Image.open(path) as raw:
        assert raw.mode == "CMYK"
    b = np.asarray(load_image(path)).astype(int)
    assert np.abs(b[8, 4] - (255, 255, 255)).max() <= 3
    assert np.abs(b[8, 28] - (0, 255, 255)).max() <= 3


def test_palette_png_with_transparency(tmp_path: Path) -> None:
    p = Image.new("P", (3, 1))
    p.putpalette([255, 0, 0, 0, 255, 0, 10, 20, 30] + [0] * (256 * 3 - 9))
    p.putdata([0, 1, 2])
    path = tmp_path / "pal.png"
    p.save(path, transparency=bytes([255, 0, 128]))  # opaque, transparent, half
    with Image.open(path) as raw:
        assert raw.mode == "P" and "transparency" in raw.info
    b = np.asarray(load_image(path))
    assert b[0].tolist() == [[255, 0, 0], [0, 0, 0], [5, 10, 15]]  # round(c * 128 / 255)


def test_rgba_composited_on_black(tmp_path: Path) -> None:
    a = np.array([[[200, 100, 50, 0], [200, 100, 50, 255], [200, 100, 50, 51]]], dtype=np.uint8)
    path = tmp_path / "rgba.png"
    Image.fromarray(a).save(path)
    b = np.asarray(load_image(path))
    assert b[0].tolist() == [[0, 0, 0], [200, 100, 50], [40, 20, 10]]


def test_la_and_bilevel_and_ycbcr(tmp_path: Path) -> None:
    la = Image.fromarray(np.array([[[90, 255], [90, 0]]], dtype=np.uint8), mode="LA")
    la.save(tmp_path / "la.png")
    assert np.asarray(load_image(tmp_path / "la.png"))[0].tolist() == [[90] * 3, [0] * 3]
    Image.new("1", (4, 2), 1).save(tmp_path / "bw.png")
    assert (np.asarray(load_image(tmp_path / "bw.png")) == 255).all()
    Image.new("YCbCr", (4, 4), (128, 128, 128)).save(tmp_path / "ycc.tif")
    b = np.asarray(load_image(tmp_path / "ycc.tif")).astype(int)
    assert np.abs(b - 128).max() <= 1


# ------------------------------------------------------------------------------- size


def test_downsample_keeps_aspect(tmp_path: Path) -> None:
    path = tmp_path / "wide.png"
    Image.new("RGB", (2048, 1000), (30, 60, 90)).save(path)
    im = load_image(path)
    assert im.size == (1024, 500)
    assert (np.asarray(im) == (30, 60, 90)).all()  # LANCZOS keeps a flat image flat
    tall = tmp_path / "tall.png"
    Image.new("L", (333, 2000), 7).save(tall)
    assert load_image(tall).size == (170, 1024)  # 333 * 1024 / 2000 = 170.496 -> 170
    assert load_image(tall, max_side=1000).size == (167, 1000)  # 166.5 -> 167 (half up)
    assert load_image(tall, max_side=100).size == (17, 100)  # 16.65 -> 17


def test_exactly_max_side_untouched(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, size=(700, 1024, 3), dtype=np.uint8)
    path = tmp_path / "k.png"
    Image.fromarray(a).save(path, compress_level=1)
    b = np.asarray(load_image(path))
    assert np.array_equal(a, b)


def test_downsample_antialiased(tmp_path: Path) -> None:
    # 1-pixel black/white stripes: nearest neighbour would alias to pure black or white
    a = np.zeros((8, 2048), dtype=np.uint8)
    a[:, ::2] = 255
    path = tmp_path / "stripes.png"
    Image.fromarray(a).save(path)
    b = np.asarray(load_image(path))
    assert b.shape == (4, 1024, 3)
    assert np.abs(b[:, 2:-2].astype(int) - 128).max() <= 2


def test_bad_max_side() -> None:
    with pytest.raises(ValueError):
        load_image("whatever.png", max_side=0)


def test_fingerprint() -> None:
    fp = loader_fingerprint(1024)
    assert fp["loader_version"] == LOADER_VERSION and fp["max_side"] == 1024
    assert fp["resample"] == "LANCZOS"
    assert loader_fingerprint(512) != fp
    with pytest.raises(ValueError):
        loader_fingerprint(0)


# ------------------------------------------------------------------ memory-safe decoding (14.3)

import os  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

import medprobe.data.images as images_mod  # noqa: E402
from medprobe.data.images import check_inside_root  # noqa: E402
from medprobe.errors import DataError  # noqa: E402

_RNG = np.random.default_rng(14)


def _texture(h: int, w: int, c: int) -> np.ndarray:
    """Smooth blobs plus noise: resampling results depend on every tap (no flat areas)."""
    base = _RNG.integers(0, 256, (h // 8 + 2, w // 8 + 2, c)).astype(np.uint8)
    a = np.asarray(Image.fromarray(base.squeeze(-1) if c == 1 else base).resize((w, h)))
    a = a.reshape(h, w, c).astype(np.int16) + _RNG.integers(-25, 25, (h, w, c))
    return np.clip(a, 0, 255).astype(np.uint8)


def _save(path: Path, kind: str, w: int, h: int) -> Path:
    """A PNG of ``kind``: L, LA, RGB, RGBA, P, P+tRNS, L+tRNS (colour key) or I;16."""
    if kind in ("L", "LA", "RGB", "RGBA"):
        c = len(kind)
        a = _texture(h, w, c)
        Image.fromarray(a[..., 0] if c == 1 else a, mode=kind).save(path)
    elif kind in ("P", "P+tRNS"):
        img = Image.fromarray(_texture(h, w, 1)[..., 0], "L").convert("P")
        img.putpalette(_RNG.integers(0, 256, 768).astype(np.uint8).tobytes())
        if kind == "P+tRNS":
            img.save(path, transparency=bytes(_RNG.integers(0, 256, 256).astype(np.uint8)))
        else:
            img.save(path)
    elif kind == "L+tRNS":
        a = _texture(h, w, 1)[..., 0]
        Image.fromarray(a, "L").save(path, transparency=int(a[0, 0]))
    else:
        Image.fromarray(_texture(h, w, 1)[..., 0].astype(np.uint16) * 257 // 3).save(path)
    return path


KINDS = ["L", "LA", "RGB", "RGBA", "P", "P+tRNS", "L+tRNS", "I;16"]
# (w, h) for max_side 96: horizontal pass first, vertical first (the height shrinks by more
# than twice the width's pixels), both sides over max_side, a band (no vertical pass), a column
# (no horizontal pass); strips of a few rows (_STRIP_BYTES patched), so every filter type meets
# a strip boundary
GEOMETRIES = [(150, 110), (103, 250), (230, 210), (301, 4), (1, 300), (70, 260)]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("w", "h"), GEOMETRIES)
def test_strip_decoding_gives_the_pixels_of_a_whole_decode(
    tmp_path: Path, monkeypatch, kind: str, w: int, h: int
) -> None:
    path = _save(tmp_path / "x.png", kind, w, h)
    monkeypatch.setattr(images_mod, "STREAM_MIN_BYTES", 0)
    monkeypatch.setattr(images_mod, "_STRIP_BYTES", 1000)
    with Image.open(path) as opened:
        assert images_mod._png_stream_plan(opened, str(path), 96) is not None
    streamed = load_image(path, max_side=96)
    with monkeypatch.context() as m:
        m.setattr(images_mod, "_png_stream_plan", lambda *a: None)
        plain = load_image(path, max_side=96)
    assert streamed.mode == plain.mode == "RGB" and streamed.size == plain.size
    assert np.array_equal(np.asarray(streamed), np.asarray(plain))


def test_strip_decoding_at_full_size(tmp_path: Path, monkeypatch) -> None:
    """The default max_side and strip size, both pass orders."""
    monkeypatch.setattr(images_mod, "STREAM_MIN_BYTES", 0)
    for kind, (w, h) in [("RGBA", (1100, 1030)), ("I;16", (1030, 2500))]:
        path = _save(tmp_path / f"{kind}.png", kind, w, h)
        streamed = load_image(path)
        with monkeypatch.context() as m:
            m.setattr(images_mod, "_png_stream_plan", lambda *a: None)
            plain = load_image(path)
        assert np.array_equal(np.asarray(streamed), np.asarray(plain)), kind


@pytest.mark.parametrize("seed", range(3))
def test_vertical_lanczos_matches_pillow_bit_for_bit(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(15):
        h = int(rng.integers(2, 3000))
        th = int(rng.integers(1, h))
        a = rng.integers(0, 256, (h, 5, 3)).astype(np.uint8)
        ref = np.asarray(Image.fromarray(a).resize((5, th), Image.Resampling.LANCZOS))
        v = images_mod._VerticalLanczos(h, th, 5, 3)
        step = int(rng.integers(1, 50))
        out = np.concatenate([v.push(a[i : i + step]) for i in range(0, h, step)])
        assert v.done and np.array_equal(out, ref), (h, th, step)


def test_pillow_pass_order_is_the_one_reproduced() -> None:
    """Pillow 13 runs the vertical pass first when the height shrinks by more than twice as
    many pixels as the width (rounding between passes makes the order visible)."""
    rng = np.random.default_rng(0)
    lanczos = Image.Resampling.LANCZOS
    for w, h, tw, th in [
        (60, 300, 50, 40),
        (300, 60, 40, 50),
        (120, 130, 60, 61),
        (90, 400, 10, 300),
    ]:
        img = Image.fromarray(rng.integers(0, 256, (h, w, 3)).astype(np.uint8))
        ref = np.asarray(img.resize((tw, th), lanczos))
        if images_mod._vertical_first((w, h), (tw, th)):
            two = img.resize((w, th), lanczos).resize((tw, th), lanczos)
        else:
            two = img.resize((tw, h), lanczos).resize((tw, th), lanczos)
        assert np.array_equal(np.asarray(two), ref), (w, h, tw, th)


def test_small_interlaced_animated_rotated_and_other_formats_take_the_plain_path(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setattr(images_mod, "STREAM_MIN_BYTES", 0)
    a = _texture(120, 130, 3)

    def plan(path: Path) -> object:
        with Image.open(path) as opened:
            return images_mod._png_stream_plan(opened, str(path), 96)

    Image.fromarray(a).save(tmp_path / "ok.png")
    assert plan(tmp_path / "ok.png") is not None
    Image.fromarray(a[:90, :90]).save(tmp_path / "small.png")  # needs no downsampling
    assert plan(tmp_path / "small.png") is None
    Image.fromarray(a).save(tmp_path / "x.jpg")
    assert plan(tmp_path / "x.jpg") is None
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(a).save(tmp_path / "rot.png", exif=exif)
    assert plan(tmp_path / "rot.png") is None
    frames = [Image.fromarray(a), Image.fromarray(255 - a)]
    frames[0].save(tmp_path / "anim.png", save_all=True, append_images=frames[1:])
    assert plan(tmp_path / "anim.png") is None
    raw = b"".join(b"\x00" + a[y].tobytes() for y in range(a.shape[0]))
    png = _png_bytes(130, 120, 8, 2, raw)
    ihdr = struct.pack(">IIBBBBB", 130, 120, 8, 2, 0, 0, 1)  # interlace method 1 (Adam7)
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    interlaced = png[:16] + ihdr + crc + png[33:]
    (tmp_path / "il.png").write_bytes(bytes(interlaced))
    assert plan(tmp_path / "il.png") is None
    monkeypatch.setattr(images_mod, "STREAM_MIN_BYTES", 32 << 20)  # the default threshold
    assert plan(tmp_path / "ok.png") is None


def test_truncated_and_corrupt_large_png_fail_loudly(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(images_mod, "STREAM_MIN_BYTES", 0)
    monkeypatch.setattr(images_mod, "_STRIP_BYTES", 2000)
    a = _texture(210, 150, 4)
    raw = b"".join(b"\x00" + a[y].tobytes() for y in range(a.shape[0]))
    good = _png_bytes(150, 210, 8, 6, raw)
    ok = tmp_path / "ok.png"
    ok.write_bytes(good)
    assert load_image(ok, max_side=96).size == (69, 96)
    idat_start = good.index(b"IDAT") + 4
    cut = tmp_path / "cut.png"
    cut.write_bytes(good[: idat_start + (len(good) - idat_start) // 2])
    with pytest.raises(ImageLoadError, match=r"truncated PNG data: \d+ of 210 rows") as e:
        load_image(cut, max_side=96)
    assert e.value.path == str(cut)
    bad = bytearray(good)
    bad[idat_start + 200 : idat_start + 260] = b"\xff" * 60
    (tmp_path / "bad.png").write_bytes(bytes(bad))
    with pytest.raises(ImageLoadError, match="cannot decode"):
        load_image(tmp_path / "bad.png", max_side=96)


def test_decompression_bomb_limit_stays_the_hard_stop(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(images_mod, "STREAM_MIN_BYTES", 0)
    path = _save(tmp_path / "x.png", "RGBA", 1500, 1100)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1500 * 1100 // 3)
    with pytest.raises(ImageLoadError, match="too many pixels"):
        load_image(path)


def test_compositing_in_blocks_is_exact(tmp_path: Path) -> None:
    rgba = _RNG.integers(0, 256, (700, 900, 4)).astype(np.uint8)
    rgba[:100, :, 3] = 255  # opaque rows
    rgba[100:200, :, 3] = 0  # transparent rows
    want = (rgba[..., :3].astype(np.uint16) * rgba[..., 3:4] + 127) // 255
    assert np.array_equal(images_mod._composite_on_black(rgba), want.astype(np.uint8))


def test_scan_bounds_decoded_bytes_across_threads(tmp_path: Path, monkeypatch) -> None:
    paths = []
    for i in range(6):
        paths.append(tmp_path / f"{i}.png")
        Image.new("RGB", (100, 100)).save(paths[-1])  # 100*100*4 = 40000 bytes decoded
    live, peak = [0], [0]
    lock = threading.Lock()

    def slow_load(path: str, max_side: int = 1024) -> None:
        with lock:
            live[0] += 1
            peak[0] = max(peak[0], live[0])
        time.sleep(0.05)
        with lock:
            live[0] -= 1

    monkeypatch.setattr(images_mod, "load_image", slow_load)
    for budget, most in [(40_000, 1), (80_000, 2), (10**9, 4), (1, 1)]:
        peak[0] = 0
        assert scan_images(paths, max_workers=4, progress=False, max_decoded_bytes=budget) == []
        assert peak[0] == most, (budget, peak[0])
    with pytest.raises(ValueError, match="max_decoded_bytes"):
        scan_images(paths, max_decoded_bytes=0)


def _peak_rss_child(code: str) -> int:
    import subprocess

    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    return int(out.stdout.split()[-1])


@pytest.mark.slow
def test_huge_rgba_png_loads_in_bounded_memory(tmp_path: Path) -> None:
    """The issue's case: 13000 x 13000 RGBA, ~1 MB on disk, 676 MB decoded (took 4.8 GB)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from bench_decode_memory import write_png

    path = tmp_path / "huge.png"
    write_png(path, 13000)
    small = tmp_path / "small.png"
    Image.new("RGBA", (64, 48)).save(small)
    code = f"""
import warnings; warnings.simplefilter("ignore")
from medprobe.data.images import load_image
load_image({str(small)!r})
open("/proc/self/clear_refs", "w").write("5")
def kib(key):
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(key))
base = kib("VmRSS:")
img = load_image({str(path)!r})
assert img.size == (1024, 1024) and img.mode == "RGB"
print(kib("VmHWM:") - base)
"""
    peak_kib = _peak_rss_child(code)
    assert peak_kib < 10 * 1024 * 1024 * 3 / 1024  # < 10x the 3 MB result


# ------------------------------------------------------------ files outside the root (14.4)


def test_paths_leading_outside_the_root_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "a").mkdir(parents=True)
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "s.png").write_bytes(b"x")
    (root / "a" / "in.png").write_bytes(b"x")
    os.symlink(secret / "s.png", root / "a" / "file_link.png")  # file symlink out
    os.symlink(secret, root / "dir_link")  # folder symlink out
    os.symlink(root / "a" / "in.png", root / "a" / "inner_link.png")  # stays inside: fine
    paths = [
        root / "a" / "in.png",
        root / "a" / "file_link.png",
        root / "dir_link" / "s.png",
        root / "a" / "inner_link.png",
        root / ".." / "secret" / "s.png",  # a PadChest ImageDir of ../secret
        root / "a" / "missing.png",  # missing inside: the scan reports it, not this check
    ]
    with pytest.raises(DataError) as e:
        check_inside_root(paths, root)
    lines = str(e.value).splitlines()
    real_secret = os.path.realpath(secret / "s.png")
    assert lines[0].startswith(
        f"3 image path(s) lead outside the dataset root {os.path.realpath(root)}"
    )
    assert lines[1:] == [
        f"  {root / 'a' / 'file_link.png'} -> {real_secret}",
        f"  {root / 'dir_link' / 's.png'} -> {real_secret}",
        f"  {root / '..' / 'secret' / 's.png'} -> {real_secret}",
    ]
    assert check_inside_root(paths, root, allow_outside=True) == [
        (str(paths[i]), real_secret) for i in (1, 2, 4)
    ]
    assert check_inside_root(paths[:1] + paths[3:4] + paths[5:], root) == []
    # a root given through a symlink is fine: what matters is where the images lead
    os.symlink(root, tmp_path / "root_link")
    assert (
        check_inside_root([tmp_path / "root_link" / "a" / "in.png"], tmp_path / "root_link") == []
    )
    # a sibling folder whose name starts like the root's is outside
    (tmp_path / "data2").mkdir()
    with pytest.raises(DataError, match="1 image path"):
        check_inside_root([tmp_path / "data2" / "x.png"], root)


def test_to_square_on_a_2_to_1_image() -> None:
    """Issue 14.5: pad keeps every pixel (centred, black margins); squash changes the aspect;
    crop leaves the image to the extractor's own preprocessing."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(1, 256, size=(20, 40, 3), dtype=np.uint8)  # height 20, width 40
    image = Image.fromarray(pixels)
    assert to_square(image, "crop") is image
    padded = np.asarray(to_square(image, "pad"))
    assert padded.shape == (40, 40, 3)
    np.testing.assert_array_equal(padded[10:30], pixels)  # all pixels, unchanged, centred
    assert not padded[:10].any() and not padded[30:].any()  # black margins
    odd = np.asarray(to_square(Image.fromarray(pixels[:, :25]), "pad"))  # 25 x 20
    assert odd.shape == (25, 25, 3) and not odd[:2].any() and not odd[22:].any()
    np.testing.assert_array_equal(odd[2:22], pixels[:, :25])  # extra margin pixel at the bottom
    squashed = to_square(image, "squash")
    assert squashed.size == (40, 40) and squashed.mode == "RGB"
    stripes = np.repeat(pixels[:1], 20, axis=0)  # vertical stripes: a stretch keeps them
    stretched = np.asarray(to_square(Image.fromarray(stripes), "squash"), dtype=int)
    assert stretched.shape == (40, 40, 3)
    assert np.abs(stretched - np.repeat(pixels[:1], 40, axis=0)).max() <= 1
    square = Image.fromarray(pixels[:, :20])
    assert to_square(square, "pad") is square and to_square(square, "squash") is square
    with pytest.raises(ValueError, match=r"expected one of \['crop', 'pad', 'squash'\]"):
        to_square(image, "fit")


def test_far_from_square_share_reads_headers(tmp_path: Path) -> None:
    paths = []
    for i, size in enumerate([(40, 20), (20, 30), (30, 20), (16, 16)]):  # ratios 2, 1.5, 1.5, 1
        paths.append(tmp_path / f"{i}.png")
        Image.new("RGB", size).save(paths[-1])
    (tmp_path / "bad.png").write_bytes(b"not an image")  # left out of the share
    assert far_from_square_share([*paths, tmp_path / "bad.png"]) == 0.75
    assert far_from_square_share([tmp_path / "bad.png"]) is None
