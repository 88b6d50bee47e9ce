"""Where a transformers checkpoint comes from: a local ``save_pretrained`` folder or a hub id.

Shared by the CLIP and IDEFICS extractors. Nothing here touches the network: a hub id is
resolved only against the local Hugging Face cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medprobe.extractors.base import ExtractorError


def jsonable(value: Any) -> Any:
    """Processor settings -> plain JSON types (enums -> their value, tuples -> lists)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (bool, str, int, float)) or value is None:
        return value
    if hasattr(value, "value"):  # enum (PIL resampling)
        return jsonable(value.value)
    return str(value)


def looks_like_path(hf_id: str) -> bool:
    """A string that can only be a filesystem path, never a hub ``org/name`` id."""
    return (
        hf_id.startswith(("/", "./", "../", "~", "\\"))
        or hf_id in (".", "..")
        or hf_id.count("/") > 1
        or hf_id.endswith("/")
        or (len(hf_id) > 1 and hf_id[1] == ":")  # Windows drive
    )


class HubSource:
    """Mixin for extractors with ``name``, ``hf_id`` and ``revision`` attributes."""

    name: str
    hf_id: str
    revision: str | None

    def _local_dir(self) -> Path | None:
        """The local model directory, or ``None`` for a hub id.

        Raises:
            ExtractorError: ``hf_id`` is a path (absolute, ``./``, several ``/``) that does
                not exist or is not a directory.
        """
        p = Path(self.hf_id).expanduser()
        if p.is_dir():
            return p
        if p.exists():
            raise ExtractorError(f"{self.name}: model path is not a directory: {p}")
        if looks_like_path(self.hf_id):
            raise ExtractorError(f"{self.name}: local model directory not found: {p}")
        return None

    def _source(self) -> str:
        local = self._local_dir()
        return str(local) if local is not None else self.hf_id

    def _load_error(self, what: str, exc: BaseException) -> ExtractorError:
        """One-line error for a checkpoint part that could not be read."""
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        where = self.hf_id if self.revision is None else f"{self.hf_id}@{self.revision}"
        return ExtractorError(
            f"{self.name}: cannot load {what} for {where!r} (offline and not in the HF cache? "
            f"a typo?): {type(exc).__name__}: {first}"
        )

    def _resolved_revision(self) -> str | None:
        """The commit a hub id resolves to in the local HF cache, else ``None`` (no network)."""
        try:
            from huggingface_hub import try_to_load_from_cache

            hit = try_to_load_from_cache(self.hf_id, "config.json", revision=self.revision)
        except Exception:  # noqa: BLE001 - a malformed id or cache means "unknown"
            return None
        if not isinstance(hit, str):
            return None
        parts = Path(hit).parts
        return parts[-2] if len(parts) >= 3 and parts[-3] == "snapshots" else None
