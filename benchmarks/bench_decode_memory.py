"""Peak memory of loading a huge, highly compressed RGBA PNG, and of scanning several at once.

The issue-14 case: a ~700 KB PNG of 13000 x 13000 RGBA pixels (676 MB decoded) cost 4.8 GB to
load, and the image scan decoded four at once. The PNG is generated row by row (never whole in
memory). Each measurement runs in a fresh child process that first loads a small image (so the
code paths are imported), then resets its peak-RSS counter (``/proc/self/clear_refs``) and
reports ``VmHWM - VmRSS`` before the load: the memory the load itself took.

* ``streamed``: ``load_image`` as shipped (strips, module docstring of medprobe.data.images);
* ``plain``: the same with strip decoding switched off (whole decode, the old path; rule 5's
  compositing is already done in row blocks), for reference;
* ``scan xN``: ``scan_images`` over four copies with ``max_workers=N`` (1, 2, 4).

Ratios (printed, never asserted): ``decode_peak_rss_ratio`` = streamed peak / the 1024-px RGB
result (target <= 10); ``decode_scan_workers_ratio`` = scan x4 peak / scan x1 peak (target:
flat, <= 1.2); ``decode_plain_peak_rss_ratio`` for comparison.

    python benchmarks/bench_decode_memory.py [--side 13000] [--no-plain]
"""

from __future__ import annotations

import argparse
import os
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

_CHILD = r"""
import os, sys
from PIL import Image
import medprobe.data.images as images
mode, path, small, budget = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
images.load_image(small)  # import and warm every code path first
if mode == "plain":
    images.STREAM_MIN_BYTES = 1 << 62
def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset VmHWM to the current RSS
base = status("VmRSS")
if mode.startswith("scan"):
    workers = int(mode[4:])
    bad = images.scan_images([path + f".{i}.png" for i in range(4)], max_workers=workers,
                             progress=False, max_decoded_bytes=budget)
    assert not bad, bad
    size = None
else:
    size = images.load_image(path).size
print(status("VmHWM") - base, size)
"""


def write_png(path: Path, side: int) -> int:
    """A side x side RGBA PNG: an opaque disc of coarse colour tiles on a transparent margin,
    written row by row through zlib (the whole image is never in memory). Returns its size."""
    import numpy as np

    x = np.arange(side)
    tiles = np.stack(
        [(x // 512 * 37) % 256, np.zeros(side, dtype=np.int64), np.full(side, 128)], axis=1
    )

    def chunk(ctype: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + ctype
            + data
            + struct.pack(">I", zlib.crc32(ctype + data))
        )

    comp = zlib.compressobj(9)
    r = side * 0.46
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 6, 0, 0, 0)))
        idat = bytearray()
        row = np.zeros((side, 4), dtype=np.uint8)
        for y in range(side):
            if y % 512 == 0:  # the rows of one band of tiles are identical
                dy = y + 256 - side / 2
                inside = (x + 0.5 - side / 2) ** 2 + dy**2 < r * r
                row[:, :3] = tiles
                row[:, 1] = (y // 512 * 53) % 256
                row[:, 3] = np.where(inside, 255, 0)
                raw = b"\x00" + row.tobytes()
            idat += comp.compress(raw)
            if len(idat) > 1 << 20:
                f.write(chunk(b"IDAT", bytes(idat)))
                idat.clear()
        idat += comp.flush()
        f.write(chunk(b"IDAT", bytes(idat)))
        f.write(chunk(b"IEND", b""))
    return path.stat().st_size


def _run(mode: str, path: Path, small: Path, budget: int) -> tuple[int, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PYTHONWARNINGS"] = "ignore"  # Pillow's DecompressionBombWarning (2x limit stays hard)
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, mode, str(path), str(small), str(budget)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    kib, size = out.stdout.split(maxsplit=1)
    return int(kib), size.strip()


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side", type=int, default=13000, help="width = height of the PNG")
    ap.add_argument("--no-plain", action="store_true", help="skip the whole-decode reference")
    ap.add_argument(
        "--budget-mb",
        type=float,
        default=None,
        help="scan_images' max_decoded_bytes in MB (default: the library's, 512 MiB; --quick "
        "passes one below the small image's decoded size so that the same mechanism shows)",
    )
    args = ap.parse_args(argv)

    from PIL import Image

    from medprobe.data.images import SCAN_DECODE_BUDGET

    budget = SCAN_DECODE_BUDGET if args.budget_mb is None else int(args.budget_mb * 1e6)

    with tempfile.TemporaryDirectory(prefix="bench-decode-memory-") as tmp:
        png = Path(tmp) / "huge.png"
        t = time.perf_counter()
        nbytes = write_png(png, args.side)
        print(
            f"{args.side} x {args.side} RGBA PNG: {nbytes / 1e3:,.0f} KB on disk, "
            f"{args.side**2 * 4 / 1e6:,.0f} MB decoded (written in {time.perf_counter() - t:.1f} s)"
        )
        for i in range(4):
            os.link(png, f"{png}.{i}.png")
        print(f"scan budget (max_decoded_bytes): {budget / 1e6:,.0f} MB")
        small = Path(tmp) / "small.png"
        Image.new("RGBA", (64, 48), (10, 20, 30, 128)).save(small)
        result_kib = 1024 * 1024 * 3 / 1024  # the 1024 x 1024 RGB result
        peaks: dict[str, int] = {}
        modes = ["streamed"] + ([] if args.no_plain else ["plain"]) + ["scan1", "scan2", "scan4"]
        for mode in modes:
            t = time.perf_counter()
            peaks[mode], size = _run(mode, png, small, budget)
            print(
                f"{mode:9s} peak +{peaks[mode] / 1024:8.1f} MB  ({peaks[mode] / result_kib:6.1f}x "
                f"the 1024-px result) in {time.perf_counter() - t:5.1f} s  {size}"
            )
    ratios = {
        "decode_peak_rss_ratio": peaks["streamed"] / result_kib,
        "decode_scan_workers_ratio": peaks["scan4"] / max(1, peaks["scan1"]),
    }
    if "plain" in peaks:
        ratios["decode_plain_peak_rss_ratio"] = peaks["plain"] / result_kib
    for k, v in ratios.items():
        print(f"{k:30s} {v:6.2f}")
    print("targets: decode_peak_rss_ratio <= 10; decode_scan_workers_ratio flat (<= 1.2)")
    return {"ratios": ratios, "peak_kib": peaks, "png_bytes": nbytes, "side": args.side}


if __name__ == "__main__":
    main()
