"""Image-loading rules (medprobe.data.images) on real files from ../shared/data and crafted ones."""

from __future__ import annotations

import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_DATA, needs_shared_data
from PIL import Image, ImageFile

from medprobe.data.images import (
    LOADER_VERSION,
    ImageLoadError,
    load_image,
    loader_fingerprint,
    scan_images,
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
