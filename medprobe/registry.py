"""Registries of medprobe's own swappable parts: tasks, extractors, probes.

Entries are lazy ``"module:attr"`` strings so that listing or validating names never imports
torch or transformers (pattern from lm-evaluation-harness ``api/registry.py``). Duplicate names
are refused; an unknown name is answered with the closest valid ones.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

from medprobe.errors import RegistryError  # noqa: F401 (re-exported)

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> lazily imported object.

    Args:
        kind: what the entries are ("task", "extractor", "probe"), used in messages.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._targets: dict[str, str] = {}
        self._loaded: dict[str, T] = {}

    def register(self, name: str, target: str) -> None:
        """Add ``name`` -> ``"package.module:attr"``.

        Raises:
            RegistryError: ``name`` is already registered.
            ValueError: ``target`` is not of the form ``module:attr``.
        """
        if name in self._targets:
            raise RegistryError(
                f"duplicate {self.kind} name {name!r} (already -> {self._targets[name]})"
            )
        if target.count(":") != 1:
            raise ValueError(f"{self.kind} target must be 'module:attr', got {target!r}")
        self._targets[name] = target

    def names(self) -> list[str]:
        return sorted(self._targets)

    def __contains__(self, name: object) -> bool:
        return name in self._targets

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def check(self, name: str) -> None:
        """Raise :class:`RegistryError` with suggestions if ``name`` is unknown."""
        if name not in self._targets:
            close = difflib.get_close_matches(name, self.names(), n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise RegistryError(
                f"unknown {self.kind} {name!r}.{hint} Valid {self.kind}s: {', '.join(self.names())}"
            )

    def get(self, name: str) -> T:
        """Import (once) and return the object registered as ``name``."""
        self.check(name)
        if name not in self._loaded:
            module, attr = self._targets[name].split(":")
            self._loaded[name] = getattr(importlib.import_module(module), attr)
        return self._loaded[name]


TASKS: Registry[Any] = Registry("task")
EXTRACTORS: Registry[Any] = Registry("extractor")
PROBES: Registry[Any] = Registry("probe")

# Each target is a builder function ``from_config(...)`` documented in its module.
TASKS.register("demo", "medprobe.data.tasks.demo:build_manifest")
TASKS.register("csv", "medprobe.data.tasks.csv_task:build_manifest")
TASKS.register("hf", "medprobe.data.tasks.hf_task:build_manifest")
TASKS.register("t1", "medprobe.data.tasks.t1_crc:build_manifest")
TASKS.register("t2", "medprobe.data.tasks.t2_pannuke:build_manifest")
TASKS.register("t3", "medprobe.data.tasks.t3_isic2018:build_manifest")
TASKS.register("t4", "medprobe.data.tasks.t4_isic2020:build_manifest")
TASKS.register("t5", "medprobe.data.tasks.t5_dr:build_manifest")
TASKS.register("t6", "medprobe.data.tasks.t6_glaucoma:build_manifest")
TASKS.register("t7", "medprobe.data.tasks.t7_padchest:build_manifest")
TASKS.register("t8", "medprobe.data.tasks.t8_knee:build_manifest")

EXTRACTORS.register("effnet_lite0", "medprobe.extractors.effnet:from_config")
EXTRACTORS.register("clip", "medprobe.extractors.clip:from_config")
EXTRACTORS.register("idefics", "medprobe.extractors.idefics.extractor:from_config")
EXTRACTORS.register("vision", "medprobe.extractors.vision:from_config")
EXTRACTORS.register("timm", "medprobe.extractors.timm_models:from_config")
EXTRACTORS.register("open_clip", "medprobe.extractors.openclip:from_config")
EXTRACTORS.register("vlm", "medprobe.extractors.vlm.extractor:from_config")

PROBES.register("logistic", "medprobe.probe.logistic:from_config")
