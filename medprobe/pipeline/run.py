"""``run(cfg)``: the probing pipeline (being rewired; see medprobe.runner for now)."""

from __future__ import annotations

from typing import Any

from medprobe.runner import run as _run


def run(cfg: Any) -> dict[str, Any]:
    """Run one probing job (``layer=all``: every cached layer); return its results."""
    return _run(cfg)
