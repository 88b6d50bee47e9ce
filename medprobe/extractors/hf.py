"""Shared base of the extractors built on a Hugging Face transformers checkpoint.

:class:`HFExtractor` carries what every such model needs, so that a new model (a generic
chat-template VLM, DINOv2, SigLIP, ...) only says what is its own:

* **Source.** ``hf_id`` is a local ``save_pretrained`` directory or a hub id. Nothing touches
  the network: a hub id is resolved against the local Hugging Face cache only, to the commit
  its revision points to (:meth:`HFExtractor.resolved_revision`), and config, processor and
  weights are all read at that commit, the one fingerprinted.
* **Fingerprint.** :meth:`HFExtractor.fingerprint` = the checkpoint (a local directory: a digest
  of each of its weight / config / processor files; a hub id: the resolved commit) + what the
  subclass reports in :meth:`HFExtractor.feature_settings` (dtype, pooling, preprocessing,
  prompt, quantisation, ...). Never loads weights.
* **Loading.** :meth:`HFExtractor.pretrained` reads one part (config, processor, weights) at
  the resolved revision and turns a failure into one :class:`ExtractorError` line naming the
  part and the checkpoint.
* **dtype, quantisation, placement.** ``dtype`` (float32, bfloat16, float16) is the weights'
  and compute dtype; ``quantization`` (none, 8bit = LLM.int8, 4bit = NF4) a bitsandbytes
  config (:func:`bnb_config`); placement either moves the model to one ``device``
  (``uses_device_map = False``: small models) or hands ``device_map`` / ``max_memory`` to
  ``from_pretrained`` (accelerate places whole blocks over the devices; a quantised model is
  never moved).

A subclass sets the class attributes (``name``, ``label``, ``code_version``, ``poolings``,
``model_types``, ``supports_quantization``, ``uses_device_map``, ``fingerprint_globs``) and
implements :meth:`HFExtractor.build_processor`, :meth:`HFExtractor.feature_settings`,
``layers``, ``preprocess``, ``extract`` and a ``load`` that calls
:meth:`HFExtractor.load_pretrained` with its model class and then :meth:`HFExtractor.place`.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self

from medprobe.errors import ExtractorError
from medprobe.extractors.base import LayerId, option_value
from medprobe.hashing import weights_digest

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

#: Weights and compute dtypes (features are always returned as float32).
DTYPES = ("float32", "bfloat16", "float16")
#: bitsandbytes quantisations: none, LLM.int8 (8bit), NF4 without double quantisation (4bit).
QUANTIZATIONS = ("none", "8bit", "4bit")
#: Weight files of a checkpoint directory.
WEIGHT_GLOBS = ("*.safetensors", "*.bin")
#: Named ``max_memory`` devices, in the order accelerate fills them (after the GPUs).
NAMED_DEVICES = ("mps", "cpu", "disk")
#: What ``from_pretrained`` raises for a checkpoint part it cannot read (offline and not
#: cached, a typo, a malformed file): turned into one :class:`ExtractorError` line.
LOAD_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, KeyError, TypeError)


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


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' info and warnings (e.g. a truncated load's list of skipped
    blocks) for the duration of the block."""
    from transformers.utils import logging as hf_logging

    prev = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(prev)


# ------------------------------------------------------------------------------ quantisation


def bnb_config(quantization: str, compute_dtype: Any) -> Any:
    """The ``transformers.BitsAndBytesConfig`` of ``quantization``; ``None`` for ``"none"``.

    ``8bit``: LLM.int8 (outlier threshold 6.0, transformers' default). ``4bit``: NF4 without
    double quantisation, computing in ``compute_dtype`` (a ``torch.dtype``).
    """
    from transformers import BitsAndBytesConfig

    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    if quantization == "4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=False,
            bnb_4bit_compute_dtype=compute_dtype,
        )
    return None


def quantization_settings(quantization: str, dtype: str) -> dict[str, Any] | None:
    """What :func:`bnb_config` sets, as JSON for a fingerprint (``None`` without quantisation).

    ``dtype`` is the compute dtype's name (``"bfloat16"``).
    """
    if quantization == "8bit":
        return {"method": "bitsandbytes LLM.int8", "llm_int8_threshold": 6.0}
    if quantization == "4bit":
        return {
            "method": "bitsandbytes 4bit",
            "bnb_4bit_quant_type": "nf4",
            "bnb_4bit_use_double_quant": False,
            "bnb_4bit_compute_dtype": dtype,
        }
    return None


# ---------------------------------------------------------------- max_memory (accelerate)


def memory_device(key: Any, who: str = "model") -> int | str:
    """A ``max_memory`` key -> a GPU index (``0``, ``"0"``, ``"cuda:0"`` -> 0) or a name of
    :data:`NAMED_DEVICES`.

    Raises:
        ExtractorError: anything else (the message starts with ``who``).
    """
    if isinstance(key, int) and not isinstance(key, bool) and key >= 0:
        return key
    text = str(key).strip().lower()
    if text.startswith("cuda:"):
        text = text[5:]
    if text.isdigit():
        return int(text)
    if text in NAMED_DEVICES:
        return text
    raise ExtractorError(
        f"{who}: max_memory device {key!r} is not a GPU index (0, 1, ... or cuda:0) nor one "
        f"of {list(NAMED_DEVICES)}"
    )


def size_bytes(value: Any, who: str = "model") -> int:
    """A ``max_memory`` size -> bytes, as accelerate reads it (``48GiB`` = 48 x 2**30,
    ``51.5GB`` = 51.5e9; an integer is bytes).

    Raises:
        ExtractorError: a negative integer, a value that is neither an integer nor a string,
            a size ending in a lower-case ``b`` (accelerate reads ``48gb`` as gigabits), or a
            string accelerate cannot read (the message starts with ``who``).
    """
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ExtractorError(f"{who}: max_memory size {value} is negative")
        return value
    if not isinstance(value, str):
        raise ExtractorError(
            f"{who}: max_memory size {value!r} must be bytes (an integer) or a string like 48GiB"
        )
    text = value.strip()
    if text.endswith("b") and not text.lower().endswith("ib"):
        raise ExtractorError(
            f"{who}: max_memory size {value!r} ends in a lower-case b, which accelerate reads "
            "as bits; write GB (1e9 bytes) or GiB (2**30 bytes)"
        )
    from accelerate.utils import convert_file_size_to_int

    try:
        return int(convert_file_size_to_int(text))
    except ValueError:
        raise ExtractorError(
            f"{who}: max_memory size {value!r} is not bytes nor a size like 48GiB, 500MiB, 51.5GB"
        ) from None


def parse_max_memory(
    spec: str | Mapping[Any, Any] | None, who: str = "model"
) -> dict[int | str, int | str] | None:
    """Per-device memory limits for accelerate -> e.g. ``{0: "48GiB", "cpu": "200GiB"}``.

    Args:
        spec: a mapping (``model.max_memory``; Hydra gives ``{0: 48GiB, cpu: 200GiB}`` for the
            override ``'model.max_memory={0:48GiB,cpu:200GiB}'``), or the command-line form
            ``"0=48GiB,1=48GiB,cpu=200GiB"``; ``None`` or empty -> ``None``. Keys: a GPU index
            (``0``, ``"0"`` and ``"cuda:0"`` all mean 0), ``"cpu"``, ``"disk"``, ``"mps"``.
            Sizes: bytes (an integer, in a mapping only: on the command line a bare ``48``
            is refused as a likely missing unit) or what accelerate reads: ``48GiB`` (2**30
            bytes), ``500MiB``, ``51.5GB`` (1e9 bytes), ``500MB``.
        who: the extractor named at the start of an error message.

    Returns:
        The limits with normalised keys, GPUs first in index order (accelerate's fill order),
        values as given (accelerate converts them).

    Raises:
        ExtractorError: an entry that is not ``DEVICE=SIZE``, an unknown device, a device
            given twice, a size accelerate cannot read, a negative size, or a size ending in
            a lower-case ``b`` (accelerate reads ``48gb`` as gigabits).
    """
    if spec is None:
        return None
    items: list[tuple[Any, Any]]
    if isinstance(spec, str):
        if not spec.strip():
            return None
        items = []
        for part in spec.split(","):
            key, sep, value = part.partition("=")
            if not sep or not key.strip() or not value.strip():
                raise ExtractorError(
                    f"{who}: max_memory entry {part.strip()!r} is not DEVICE=SIZE "
                    "(e.g. 0=48GiB,1=48GiB,cpu=200GiB)"
                )
            items.append((key.strip(), value.strip()))
    elif isinstance(spec, Mapping):
        items = list(spec.items())
    else:
        raise ExtractorError(
            f"{who}: max_memory must be a mapping like {{0: 48GiB, cpu: 200GiB}}, got {spec!r}"
        )
    if not items:
        return None
    out: dict[int | str, int | str] = {}
    for key, value in items:
        dev = memory_device(key, who)
        if dev in out:
            raise ExtractorError(f"{who}: max_memory gives device {dev!r} twice")
        size_bytes(value, who)
        out[dev] = value.strip() if isinstance(value, str) else value
    gpus = sorted(k for k in out if isinstance(k, int))
    return {**{g: out[g] for g in gpus}, **{k: out[k] for k in NAMED_DEVICES if k in out}}


# -------------------------------------------------------------------------------- the base


def _names_a_gpu(device_map: Any) -> bool:
    """Whether an accelerate ``device_map`` names a GPU (``cuda``, ``cuda:1``, ``0``, or such
    a value in a mapping); ``auto`` / ``balanced`` / ``sequential`` / ``cpu`` / ``disk`` do
    not (accelerate falls back to the CPU)."""
    if isinstance(device_map, Mapping):
        return any(_names_a_gpu(v) for v in device_map.values())
    if isinstance(device_map, int) and not isinstance(device_map, bool):
        return True
    text = str(device_map).strip().lower()
    return text.startswith("cuda") or text.isdigit()


class HFExtractor:
    """Base of the extractors that read a transformers checkpoint (see the module docstring).

    Construction is cheap and loads nothing; the config, processor and weights are read on
    first use.

    Args:
        hf_id: hub id (``"openai/clip-vit-base-patch32"``) or a local directory written by
            ``save_pretrained``.
        revision: hub branch, tag or commit (ignored for a local directory).
        dtype: ``"float32"``, ``"bfloat16"`` or ``"float16"`` (an enum of these is accepted):
            weights and compute dtype (compute dtype under quantisation).
        device: ``"auto"`` or a torch device string (``"cpu"``, ``"cuda:1"``). Moved models:
            ``"auto"`` = cuda if available, else cpu. Placed models (``uses_device_map``):
            used when ``device_map`` is ``None``, ``"auto"`` -> ``device_map="auto"``,
            otherwise every module on that device.
        pooling: one of the subclass's ``poolings``; ``"default"`` = the first.
        quantization: ``"none"``, ``"8bit"`` or ``"4bit"`` (only where
            ``supports_quantization``).
        device_map: accelerate placement (``"auto"``, ``"balanced"``, ``"sequential"``,
            ``"cpu"``, ``"cuda:0"``, or a ``{module: device}`` mapping); placed models only.
        max_memory: per-device limits for ``device_map`` (:func:`parse_max_memory`).

    Raises:
        ExtractorError: empty ``hf_id``; unknown dtype, pooling or quantisation; a device that
            is not a string; malformed ``max_memory``.
    """

    #: The extractor kind (registry key); the fingerprint's ``"extractor"`` and the prefix of
    #: every message.
    name: ClassVar[str] = "hf"
    #: The model family in messages ("cannot load the CLIP config").
    label: ClassVar[str] = "HF"
    #: Bumped whenever a change in the subclass's code changes the features (fingerprinted).
    code_version: ClassVar[str | int] = ""
    #: Valid poolings; the first is what ``"default"`` means.
    poolings: ClassVar[tuple[str, ...]] = ("default",)
    #: ``config.model_type`` values the subclass can read; empty: any.
    model_types: ClassVar[tuple[str, ...]] = ()
    #: ``quantization`` (bitsandbytes) applies.
    supports_quantization: ClassVar[bool] = False
    #: Placed by accelerate (``device_map`` / ``max_memory``) instead of moved to ``device``.
    uses_device_map: ClassVar[bool] = False
    #: Files digested for a local model directory (at least one weight file must match).
    fingerprint_globs: ClassVar[tuple[str, ...]] = (
        *WEIGHT_GLOBS,
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer.model",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "added_tokens.json",
        "preprocessor_config.json",
        "processor_config.json",
    )
    #: The fingerprint key of the ``{file name: digest}`` of a local directory.
    fingerprint_files_key: ClassVar[str] = "files"
    #: Attributes dropped when pickled (DataLoader workers need the processor, not the model).
    transient: ClassVar[tuple[str, ...]] = ("_model",)

    def __init__(
        self,
        hf_id: str,
        *,
        revision: str | None = None,
        dtype: Any = "float32",
        device: str | None = "auto",
        pooling: str = "default",
        quantization: Any = "none",
        device_map: str | Mapping[str, Any] | None = None,
        max_memory: str | Mapping[Any, Any] | None = None,
    ) -> None:
        if not isinstance(hf_id, (str, Path)) or not str(hf_id).strip():
            raise ExtractorError(
                f"{self.name}: model.hf_id must be a hub id or a local directory, got {hf_id!r}"
            )
        dtype = str(option_value(dtype))
        if dtype not in DTYPES:
            raise ExtractorError(
                f"{self.name}: unknown dtype {dtype!r}; valid dtypes: {list(DTYPES)}"
            )
        pooling = str(option_value(pooling) or "default")
        if pooling == "default":
            pooling = self.poolings[0]
        if pooling not in self.poolings:
            raise ExtractorError(
                f"{self.name}: unknown pooling {pooling!r}; valid poolings: {list(self.poolings)}"
            )
        quantization = str(option_value(quantization) or "none")
        if quantization not in QUANTIZATIONS:
            raise ExtractorError(
                f"{self.name}: unknown quantization {quantization!r}; valid: {list(QUANTIZATIONS)}"
            )
        if quantization != "none" and not self.supports_quantization:
            raise ExtractorError(f"{self.name}: quantization={quantization} is not supported")
        device = "auto" if device is None or device == "" else device
        if not isinstance(device, str):
            raise ExtractorError(
                f"{self.name}: device must be a string such as 'auto', 'cpu', 'cuda:0', "
                f"got {device!r}"
            )
        self.hf_id = str(hf_id)
        self.revision = revision or None
        self.dtype = dtype
        self.device = device
        self.pooling = pooling
        self.quantization = quantization
        self.device_map = dict(device_map) if isinstance(device_map, Mapping) else device_map
        self.max_memory = parse_max_memory(max_memory, self.name)
        self._config: Any = None
        self._processor: Any = None
        self._model: Any = None
        self._fingerprint: dict[str, Any] | None = None

    @classmethod
    def config_kwargs(cls, cfg: Any) -> dict[str, Any]:
        """The constructor arguments a model config node holds (attribute access only).

        Reads ``cfg.hf_id``, ``revision``, ``dtype``, ``device``, ``pooling``, and where
        ``supports_quantization`` also ``quantization``, ``device_map``, ``max_memory``
        (mappings become dicts; keys of ``device_map`` strings).
        """
        kwargs: dict[str, Any] = {
            "hf_id": cfg.hf_id,
            "revision": cfg.revision,
            "dtype": cfg.dtype,
            "device": cfg.device,
            "pooling": cfg.pooling,
        }
        if cls.supports_quantization:
            device_map = cfg.device_map
            if isinstance(device_map, Mapping):
                device_map = {str(k): v for k, v in device_map.items()}
            max_memory = cfg.max_memory
            if isinstance(max_memory, Mapping):
                max_memory = dict(max_memory.items())
            kwargs.update(
                quantization=cfg.quantization, device_map=device_map, max_memory=max_memory
            )
        return kwargs

    @classmethod
    def from_model_config(cls, cfg: Any, **extra: Any) -> Self:
        """Build from a model config node (:meth:`config_kwargs` + ``extra``); no weights are
        loaded, but a local directory that does not exist fails here, naming its path.

        Raises:
            ExtractorError: as the constructor; a missing local directory.
        """
        ext = cls(**cls.config_kwargs(cfg), **extra)
        ext.local_dir()
        return ext

    # ------------------------------------------------------------------ source

    def local_dir(self) -> Path | None:
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

    def source(self) -> str:
        """What ``from_pretrained`` reads: the local directory or the hub id."""
        local = self.local_dir()
        return str(local) if local is not None else self.hf_id

    def resolved_revision(self) -> str | None:
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

    def load_revision(self) -> str:
        """The revision every part is read at: for a hub id the cached commit (exactly what
        was fingerprinted) when there is one, else ``revision`` (``"main"`` if unset)."""
        rev = self.revision or "main"
        if self.local_dir() is None:
            rev = self.resolved_revision() or rev
        return rev

    def load_error(self, what: str, exc: BaseException) -> ExtractorError:
        """One-line error for a checkpoint part (``what``) that could not be read."""
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        where = self.hf_id if self.revision is None else f"{self.hf_id}@{self.revision}"
        return ExtractorError(
            f"{self.name}: cannot load {what} for {where!r} (offline and not in the HF cache? "
            f"a typo?): {type(exc).__name__}: {first}"
        )

    def pretrained(
        self,
        loader: Any,
        what: str,
        *,
        errors: tuple[type[BaseException], ...] = LOAD_ERRORS,
        quiet: bool = False,
        **kwargs: Any,
    ) -> Any:
        """``loader.from_pretrained(source, revision=load_revision(), **kwargs)``.

        Args:
            loader: a transformers class with ``from_pretrained`` (config, processor, model).
            what: the part, for the error message (``"the CLIP config"``).
            errors: the exception types that mean "cannot read this checkpoint part".
            quiet: silence transformers' logging (:func:`quiet_transformers`).

        Raises:
            ExtractorError: one of ``errors`` was raised (:meth:`load_error`).
        """
        kwargs.setdefault("revision", self.load_revision())
        try:
            if quiet:
                with quiet_transformers():
                    return loader.from_pretrained(self.source(), **kwargs)
            return loader.from_pretrained(self.source(), **kwargs)
        except errors as exc:
            raise self.load_error(what, exc) from None

    # ------------------------------------------------------------------ config, processor

    def config(self) -> Any:
        """The checkpoint's config (read once, no weights; :meth:`build_config`).

        Raises:
            ExtractorError: missing directory, unreadable config, a ``model_type`` not in
                ``model_types``, or what :meth:`check_config` refuses.
        """
        if self._config is None:
            hf_config = self.build_config()
            model_type = getattr(hf_config, "model_type", None)
            if self.model_types and model_type not in self.model_types:
                raise ExtractorError(
                    f"{self.name}: {self.hf_id!r} is a {model_type!r} model, not {self.label} "
                    f"(model_type {' or '.join(repr(t) for t in self.model_types)})"
                )
            self.check_config(hf_config)
            self._config = hf_config
        return self._config

    def build_config(self) -> Any:
        """Read the config: ``AutoConfig`` by default."""
        from transformers import AutoConfig

        return self.pretrained(AutoConfig, f"the {self.label} config")

    def check_config(self, hf_config: Any) -> None:
        """Refuse option combinations the checkpoint's config (a transformers
        ``PretrainedConfig``) cannot run (hook; default: none)."""

    def processor(self) -> Any:
        """The checkpoint's processor (read once; :meth:`build_processor`).

        Raises:
            ExtractorError: missing directory or processor files.
        """
        if self._processor is None:
            self._processor = self.build_processor()
        return self._processor

    def build_processor(self) -> Any:
        """Read the processor (image processor, tokenizer) the model needs."""
        raise NotImplementedError

    @staticmethod
    def processor_settings(proc: Any, keys: tuple[str, ...]) -> dict[str, Any]:
        """``{"backend": class name, key: setting}`` of an image processor, JSON types.

        The class name is recorded because transformers' torchvision and PIL backends do not
        resize bit-identically; medprobe's extractors pin the PIL one (``...Pil``), so
        installing torchvision never changes features.
        """
        settings = proc.to_dict()
        out: dict[str, Any] = {"backend": type(proc).__name__}
        for key in keys:
            out[key] = jsonable(settings.get(key))
        return out

    # ------------------------------------------------------------------ fingerprint

    def file_digest(self, path: Path) -> str:
        """Digest of one local checkpoint file (:func:`medprobe.hashing.weights_digest`)."""
        return weights_digest(path)

    def local_files(self, local: Path) -> dict[str, str]:
        """``{file name: digest}`` of the ``fingerprint_globs`` files of a local directory.

        Raises:
            ExtractorError: no weight file (``*.safetensors``, ``*.bin``) in it.
        """
        files = sorted({f for g in self.fingerprint_globs for f in local.glob(g) if f.is_file()})
        if not any(f.match(g) for f in files for g in WEIGHT_GLOBS):
            raise ExtractorError(
                f"{self.name}: no weight files ({', '.join(WEIGHT_GLOBS)}) in local model "
                f"directory {local}"
            )
        return {f.name: self.file_digest(f) for f in files}

    def source_fingerprint(self) -> dict[str, Any]:
        """The checkpoint part of :meth:`fingerprint`.

        Keys: ``extractor`` (``name``), ``code_version``, ``transformers`` (its version: the
        meaning of ``hidden_states[0]`` and the processors' token insertion changed between
        4.x and 5.x), ``hf_id``, ``revision``, ``source``
        (``"local"`` or ``"hub"``); for a local directory ``fingerprint_files_key`` ->
        :meth:`local_files`; for a hub id ``resolved_revision`` = the cached commit, else the
        revision (``"main"`` when none was given).
        """
        local = self.local_dir()
        import transformers

        fp: dict[str, Any] = {
            "extractor": self.name,
            "code_version": self.code_version,
            # hidden_states[0] and end-of-utterance insertion changed between 4.x and 5.x
            "transformers": transformers.__version__,
            "hf_id": self.hf_id,
            "revision": self.revision,
        }
        if local is not None:
            fp["source"] = "local"
            fp[self.fingerprint_files_key] = self.local_files(local)
        else:
            fp["source"] = "hub"
            fp["resolved_revision"] = self.resolved_revision() or self.revision or "main"
        return fp

    def feature_settings(self) -> dict[str, Any]:
        """Everything besides the checkpoint that changes the features (JSON types, in
        fingerprint order): dtype, pooling, preprocessing, prompt, quantisation ..."""
        raise NotImplementedError

    def fingerprint(self) -> dict[str, Any]:
        """:meth:`source_fingerprint` + :meth:`feature_settings`, computed once. Never loads
        weights.

        Raises:
            ExtractorError: missing local directory, no weight files in it, unreadable
                config or processor.
        """
        if self._fingerprint is None:
            self._fingerprint = {**self.source_fingerprint(), **self.feature_settings()}
        return copy.deepcopy(self._fingerprint)

    def quantization_settings(self) -> dict[str, Any] | None:
        """The bitsandbytes settings used (:func:`quantization_settings`), ``None`` without."""
        return quantization_settings(self.quantization, self.dtype)

    def runtime_info(self) -> dict[str, Any]:
        """How the loaded model runs, for ``results.json`` (``extractor_load``):
        ``attn_implementation`` (transformers' ``config._attn_implementation``: ``"eager"``,
        ``"sdpa"``, ...) and ``device_type`` (``"cpu"``, ``"cuda"``, ``"meta"`` ...); both
        ``None`` before loading."""
        model = self._model
        if model is None:
            return {"attn_implementation": None, "device_type": None}
        attn = getattr(getattr(model, "config", None), "_attn_implementation", None)
        dev = getattr(model, "device", None)
        return {
            "attn_implementation": None if attn is None else str(attn),
            "device_type": None if dev is None else str(getattr(dev, "type", dev)),
        }

    def load_info(self) -> dict[str, Any]:
        """What was loaded, for ``results.json``: ``loaded``, :meth:`runtime_info`, ``dtype``."""
        return {"loaded": self._model is not None, **self.runtime_info(), "dtype": self.dtype}

    # ------------------------------------------------------------------ loading, placement

    def torch_dtype(self) -> torch.dtype:
        import torch

        dt: torch.dtype = getattr(torch, self.dtype)
        return dt

    def torch_device(self) -> torch.device:
        """The device a moved model goes to (``"auto"``: cuda if available, else cpu).

        Raises:
            ExtractorError: an invalid device string, or cuda requested without CUDA.
        """
        import torch

        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            dev = torch.device(self.device)
        except (RuntimeError, ValueError) as exc:
            raise ExtractorError(f"{self.name}: invalid device {self.device!r}: {exc}") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ExtractorError(
                f"{self.name}: device {self.device!r} requested but CUDA is not available"
            )
        return dev

    def effective_device_map(self) -> Any:
        """The ``device_map`` a placed model is loaded with: ``device_map`` as given, else from
        ``device`` (``"auto"`` -> ``"auto"``, otherwise ``{"": device}``)."""
        if self.device_map is not None:
            return self.device_map
        return "auto" if self.device == "auto" else {"": self.device}

    def max_memory_limits(self) -> dict[int | str, int | str] | None:
        """A fresh copy of the ``max_memory`` limits (accelerate converts the dict it is given
        in place)."""
        return dict(self.max_memory) if self.max_memory else None

    def from_pretrained_kwargs(self) -> dict[str, Any]:
        """``revision`` and ``dtype``; for placed models ``device_map``, ``max_memory`` (when
        set) and ``quantization_config`` (when quantised)."""
        torch_dtype = self.torch_dtype()
        kwargs: dict[str, Any] = {"revision": self.load_revision(), "dtype": torch_dtype}
        if self.uses_device_map:
            kwargs["device_map"] = self.effective_device_map()
            if _names_a_gpu(kwargs["device_map"]):
                import torch

                if not torch.cuda.is_available():
                    raise ExtractorError(
                        f"{self.name}: model.device_map={self.device_map} places the model on a "
                        "GPU but CUDA is not available here; use model.device_map=cpu (or auto)"
                    )
            if self.max_memory_limits():
                kwargs["max_memory"] = self.max_memory_limits()
            if self.quantization != "none":
                kwargs["quantization_config"] = bnb_config(self.quantization, torch_dtype)
        return kwargs

    def offload_refused_hint(self) -> str:
        """Appended to the error when bitsandbytes refuses cpu/disk offload (hook)."""
        return ""

    def load_pretrained(
        self, model_class: Any, what: str, *, quiet: bool = False, **extra: Any
    ) -> tuple[Any, dict[str, Any]]:
        """``model_class.from_pretrained`` with :meth:`from_pretrained_kwargs` + ``extra``.

        Not yet moved (see :meth:`place`).

        Returns:
            ``(model, loading info)`` (transformers' ``missing_keys``, ``unexpected_keys``, ...).

        Raises:
            ExtractorError: the weights cannot be read; a quantised model that does not fit the
                GPUs of ``max_memory`` (bitsandbytes refuses cpu/disk offload).
        """
        kwargs = {**self.from_pretrained_kwargs(), **extra, "output_loading_info": True}
        errors: tuple[type[BaseException], ...] = (*LOAD_ERRORS, RuntimeError, ImportError)
        try:
            if quiet:
                with quiet_transformers():
                    model, info = model_class.from_pretrained(self.source(), **kwargs)
            else:
                model, info = model_class.from_pretrained(self.source(), **kwargs)
        except errors as exc:
            # transformers' bitsandbytes quantizer raises a bare ValueError for this; its
            # text is the only way to tell it from an unreadable checkpoint
            if self.quantization != "none" and "dispatched on the CPU or the disk" in str(exc):
                raise ExtractorError(
                    f"{self.name}: the {self.quantization} model does not fit the GPUs of "
                    f"max_memory ({self.max_memory_limits()}) and bitsandbytes refuses cpu/disk "
                    f"offload{self.offload_refused_hint()}"
                ) from None
            raise self.load_error(what, exc) from None
        return model, dict(info)

    def place(self, model: Any) -> Any:
        """Eval mode; a moved model (not ``uses_device_map``) goes to :meth:`torch_device` in
        ``dtype``. A placed model is never moved (a quantised one cannot be)."""
        if not self.uses_device_map:
            model = model.to(self.torch_device())
        return model.eval()

    def release(self) -> None:
        """Drop the loaded model (frees its memory once nothing else holds it)."""
        self._model = None
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:  # pragma: no cover - torch ships with the extractors
            pass

    # ------------------------------------------------------------------ protocol

    def layers(self) -> list[LayerId]:
        raise NotImplementedError

    def __getstate__(self) -> dict[str, Any]:
        """Pickle without the loaded model (DataLoader workers only need the processor)."""
        state = self.__dict__.copy()
        for key in self.transient:
            state[key] = None
        return state
