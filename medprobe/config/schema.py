"""The typed config: one dataclass per config group, one Enum per closed set of values.

``conf/config.yaml`` starts from ``base_config`` (:class:`Config`), so every group file
(``model/``, ``task/``, ``prompt/``, ``probe/``, ``tracker/``, ``cluster/``) is merged into a
typed node while Hydra composes. At compose time, before any work:

* a misspelled key fails, naming the keys the node has (``Key 'batchsize' not in
  'ModelConfig(name, kind, hf_id, ...)'``: see :func:`schema`);
* a value outside a closed set fails, naming the valid values (``Invalid value '16bit',
  expected one of [none, 8bit, 4bit]``): every closed set is an :class:`enum.StrEnum` whose
  member names are its values, so ``q == "8bit"`` and ``str(q) == "8bit"`` hold and OmegaConf,
  which looks members up by name, accepts exactly the documented spellings;
* a key that does not apply to the chosen task fails: each task has its own schema
  (:data:`TASK_SCHEMAS`), e.g. ``task.image_dir`` exists for T3/T4 only and
  ``task.options.eyepacs_test`` for T5 only.

Each default is written here once; the YAML files state only what differs from it.
Range rules a type cannot express (``train_fraction`` in (0, 1], ...) and rules across keys
live in :mod:`medprobe.config.validate`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any, TypeVar

from omegaconf import MISSING

__all__ = [
    "TASK_SCHEMAS",
    "AurocCI",
    "BootstrapConfig",
    "ClassWeight",
    "ClusterConfig",
    "ClusterName",
    "Config",
    "CsvTaskConfig",
    "DType",
    "DataConfig",
    "DemoTaskConfig",
    "EyepacsTest",
    "FractionOf",
    "HfTaskConfig",
    "ImageFingerprint",
    "ModelConfig",
    "OnBadRow",
    "OnError",
    "PaperTaskConfig",
    "Pooling",
    "ProbeBackend",
    "ProbeConfig",
    "ProbeDType",
    "PromptConfig",
    "PromptFormat",
    "Quantization",
    "RandomSplit",
    "ResamplingUnit",
    "ResizeMode",
    "SelectionMetric",
    "SplitBy",
    "SplitRole",
    "SuspectedGlaucoma",
    "T1TaskConfig",
    "T2Options",
    "T2TaskConfig",
    "T3TaskConfig",
    "T4TaskConfig",
    "T5Options",
    "T5TaskConfig",
    "T6Options",
    "T6TaskConfig",
    "T7TaskConfig",
    "T8Options",
    "T8TaskConfig",
    "TaskConfig",
    "TaskMetric",
    "TrackerConfig",
    "TrackerMode",
    "TrackerName",
    "schema",
]

C = TypeVar("C", bound=type)


def schema(cls: C) -> C:
    """Make OmegaConf's unknown-key error list the keys a node has.

    OmegaConf names a typed node by its class ``__name__`` in ``Key 'x' not in '<name>'``,
    the message Hydra prints for a misspelled override. Setting ``__name__`` to
    ``"T5Options(eyepacs_test)"`` turns it into a list of the valid keys. ``__qualname__``
    (repr, pickling, imports) is unchanged.
    """
    cls.__name__ = f"{cls.__qualname__}({', '.join(f.name for f in fields(cls))})"
    return cls


# --------------------------------------------------------------------------------------------
# closed sets


class DType(StrEnum):
    """Floating-point type the model runs in."""

    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


# bitsandbytes weight quantisation of large models (docs/idefics.md). Functional form: member
# names must equal the values ("8bit" is not a Python identifier).
Quantization = StrEnum("Quantization", [("none", "none"), ("8bit", "8bit"), ("4bit", "4bit")])


class Pooling(StrEnum):
    """How hidden states become one vector per image; the valid ones depend on the extractor
    kind (``medprobe.config.validate.POOLINGS``): ``default`` (each kind's own: CLIP ``cls``,
    IDEFICS ``last``, EfficientNet global average, vision encoders ``cls`` or, without a class
    token, ``mean_patch``), CLIP ``cls`` | ``mean``, IDEFICS ``last`` | ``mean_after_image`` |
    ``image_latents``, vision encoders (kinds ``vision``, ``timm``, ``open_clip``) ``cls`` |
    ``mean_patch`` (patch tokens only: class and register tokens excluded) |
    ``cls_mean_patch`` (both, concatenated)."""

    default = "default"
    cls = "cls"
    mean = "mean"
    mean_patch = "mean_patch"
    cls_mean_patch = "cls_mean_patch"
    last = "last"
    mean_after_image = "mean_after_image"
    image_latents = "image_latents"
    mean_image = "mean_image"


class PromptFormat(StrEnum):
    """How IDEFICS wraps a bare question (``medprobe.extractors.idefics.prompt``): ``chat``, the
    instruct chat turn ``User:<image>Q<end_of_utterance>\nAssistant:`` (medprobe's default), or
    ``plain``, ``<image>Q`` as the authors' ``activation.py`` fed it (``processor([image,
    text])``; the paper presets, ``fidelity=paper``). Ignored by models without a prompt."""

    chat = "chat"
    plain = "plain"


class ResizeMode(StrEnum):
    """How an image becomes square before the extractor's own preprocessing
    (``medprobe.data.images.to_square``): ``crop`` = nothing here, the extractor's own
    preprocessing as its weights were trained (EfficientNet and CLIP centre-crop, dropping the
    borders of a non-square image; IDEFICS squashes); ``pad`` = pad to a square, centred, with
    black (every pixel kept); ``squash`` = resize to a square ignoring the aspect ratio."""

    crop = "crop"
    pad = "pad"
    squash = "squash"


class ProbeBackend(StrEnum):
    """Solver of the probe's objective: scikit-learn (scipy L-BFGS-B) or full-batch L-BFGS in
    torch (large probes on a GPU)."""

    sklearn = "sklearn"
    torch = "torch"


class ProbeDType(StrEnum):
    """Floating-point type of the torch probe (float64: 2x the memory, closer to sklearn)."""

    float32 = "float32"
    float64 = "float64"


class ClassWeight(StrEnum):
    """``balanced`` weights classes inversely to their frequency; null = unweighted."""

    balanced = "balanced"


class SelectionMetric(StrEnum):
    """Validation metric that picks C (``medprobe.probe.SELECTION_METRICS``)."""

    auroc_macro = "auroc_macro"
    f1_macro = "f1_macro"
    accuracy = "accuracy"
    neg_log_loss = "neg_log_loss"


class ResamplingUnit(StrEnum):
    """What the bootstrap resamples (``bootstrap.unit``): ``auto`` = patients where the task
    has patient (or lesion) ids, else images; ``image``; ``patient`` (an error on a task without
    ids). docs/statistics.md, section 2."""

    auto = "auto"
    image = "image"
    patient = "patient"


class AurocCI(StrEnum):
    """Interval of the AUROC entries (``bootstrap.auroc_ci``; ``medprobe.auroc_ci``):
    ``delong_logit`` (default: nominal coverage from 5 positives on, docs/statistics.md
    section 4), ``percentile``, ``bca``, ``hanley_mcneil_score``."""

    percentile = "percentile"
    bca = "bca"
    delong_logit = "delong_logit"
    hanley_mcneil_score = "hanley_mcneil_score"


class FractionOf(StrEnum):
    """What ``train_fraction`` is a fraction of (``probe.fraction_of``): ``pool`` = the
    labelled pool, fit and validation rows alike (the label budget); ``fit`` = the fit rows
    only, validation rows in full (medprobe before issue 13)."""

    pool = "pool"
    fit = "fit"


class TaskMetric(StrEnum):
    """A task's primary metric (reports, layer curves): one of the summary metrics every run
    computes with a bootstrap CI."""

    auroc_macro = "auroc_macro"
    f1_macro = "f1_macro"
    accuracy = "accuracy"


class TrackerName(StrEnum):
    """Experiment tracker: Weights & Biases, or none."""

    wandb = "wandb"
    none = "none"


class TrackerMode(StrEnum):
    """W&B mode. ``auto`` = online when an API key is configured, else offline."""

    auto = "auto"
    online = "online"
    offline = "offline"
    disabled = "disabled"


class OnError(StrEnum):
    """What to do with unreadable image files: stop before extraction, or leave them out."""

    stop = "stop"
    skip = "skip"


class OnBadRow(StrEnum):
    """What a task adapter does with a bad label row (malformed, unknown label, missing image):
    ``stop`` with one error naming the file and row, or ``skip`` it and count it in the results.
    """

    stop = "stop"
    skip = "skip"


class ImageFingerprint(StrEnum):
    """How images enter the cache key: every byte (safe) or size + mtime (instant, trusting)."""

    content = "content"
    stat = "stat"


class SplitRole(StrEnum):
    """What a Hugging Face dataset's split is used as (``task=hf``, ``task.splits``)."""

    train = "train"
    val = "val"
    test = "test"


class SplitBy(StrEnum):
    """Who makes a ``task=hf`` dataset's train/val/test split.

    ``dataset``: its own splits (``task.splits`` or their names); ``medprobe``: a stratified,
    patient-level split of the pooled rows (``val_fraction``, ``test_fraction``,
    ``split_seed``); ``auto``: ``dataset`` when a split is used as test, else ``medprobe``.
    """

    auto = "auto"
    dataset = "dataset"
    medprobe = "medprobe"


class ClusterName(StrEnum):
    """Where the jobs of a ``-m`` sweep run: Hydra's own launcher, local processes, SLURM."""

    none = "none"
    local = "local"
    slurm = "slurm"


class EyepacsTest(StrEnum):
    """T5: whether EyePACS' labelled test images join training (``train``) or not (``drop``)."""

    train = "train"
    drop = "drop"


class SuspectedGlaucoma(StrEnum):
    """T6: ODIR's ``suspected glaucoma`` eyes count as positive (default), negative, or are left
    out (docs/tasks.md#t6 gives the evidence for the default)."""

    drop = "drop"
    positive = "positive"
    negative = "negative"


# --------------------------------------------------------------------------------------------
# groups


@schema
@dataclass
class ModelConfig:
    """Which model and weights. ``layers`` = layers written to the feature cache.

    ``name`` is the model's identity: the config choice (``clip``, ``plip``, ``idefics9b``, ...),
    the key every result, folder, W&B run and figure groups by. ``kind`` is the extractor
    registry key that builds it (``clip`` builds both CLIP and PLIP).
    """

    name: str = MISSING
    kind: str = MISSING
    hf_id: str | None = None
    revision: str | None = None
    dtype: DType = DType.float32
    device: str = "auto"  # auto | cpu | mps | cuda | cuda:N
    pooling: Pooling = Pooling.default
    layers: Any = "all"  # a layer id, a list of them, or all
    batch_size: int = 32
    num_workers: int = 2
    # Large-model loading (IDEFICS, docs/idefics.md; ignored by effnet/clip): bitsandbytes
    # quantisation, accelerate placement (device_map: auto|balanced|sequential|cpu|cuda:0;
    # null = from `device`), per-device limits e.g. {0: 70GiB, cpu: 200GiB}, and loading only
    # the decoder blocks the requested layers need.
    quantization: Quantization = Quantization.none
    device_map: str | None = None
    max_memory: Any = None
    truncate: bool = True
    # IDEFICS: how a bare prompt question is wrapped (PromptFormat): chat | plain (the paper's)
    prompt_format: PromptFormat = PromptFormat.chat
    # every extractor: how a non-square image becomes square (ResizeMode): crop | pad | squash
    resize: ResizeMode = ResizeMode.crop
    # timm / open_clip models: extra keyword arguments of the library's model constructor
    # (timm.create_model); "package.module:Name" strings are imported (Virchow's mlp_layer)
    model_kwargs: Any = None
    # chat-template VLMs (kind=vlm, docs/models.md): a system turn (null = the chat template's
    # own default, e.g. Qwen2-VL's "You are a helpful assistant."), and options for the
    # checkpoint's AutoProcessor (e.g. {max_pixels: 1003520}, {do_image_splitting: false});
    # both enter the cache key
    system_prompt: str | None = None
    processor_kwargs: dict[str, Any] = field(default_factory=dict)


# ---- tasks: a base with the keys every task has, one subclass per adapter kind


@schema
@dataclass
class TaskConfig:
    """Which dataset and how to read it (``medprobe.data.tasks``; docs/tasks.md).

    ``name`` is the task's identity (``t1`` ... ``t8``, ``demo``; for ``task=csv`` the name the
    user gives, default the data root's folder name); results, folders and W&B key on it.
    ``kind`` is the adapter registry key that reads it. Each adapter kind has a subclass
    (:data:`TASK_SCHEMAS`) holding only the keys that adapter reads; a task YAML selects it in
    its defaults list (``- /schema/task@_here_: t5``), so a key of another task fails at
    compose time. Class lists are the adapter's (``medprobe/data/tasks/t*.py``), not config;
    only ``task=csv`` takes ``classes``.
    """

    name: str = MISSING
    kind: str = MISSING
    metric: TaskMetric = TaskMetric.auroc_macro


@schema
@dataclass
class RandomSplit:
    """A seeded, stratified, patient-level split (``medprobe.data.splits.assign_splits``) for
    data that comes without one. The probe carves its own validation rows from train
    (``probe.val_fraction``), so the paper tasks default to no separate val split."""

    val_fraction: float = 0.0
    test_fraction: float = 0.2
    split_seed: int = 0


@schema
@dataclass
class DemoTaskConfig(TaskConfig):
    """The shipped demo set (fixed split, nothing to set)."""


@schema
@dataclass
class CsvTaskConfig(TaskConfig, RandomSplit):
    """Any user dataset: a CSV of image paths (relative to ``root``) and labels."""

    root: str | None = "${data_root}"
    csv: str | None = None  # the label CSV; null = <root>/labels.csv
    path_column: str = "path"
    label_column: str = "label"
    # null: 'patient_id' / 'split' when the CSV has that column; a name given must exist
    patient_column: str | None = None
    split_column: str | None = None
    label_sep: str | None = None  # multi-label: separator of labels in one cell, e.g. "|"
    classes: list[str] | None = None  # class order; null = sorted labels found
    val_fraction: float = 0.1
    on_bad_row: OnBadRow = OnBadRow.stop  # stop: every bad row in one error; skip: count them


@schema
@dataclass
class HfTaskConfig(TaskConfig, RandomSplit):
    """Any image-classification dataset read through Hugging Face ``datasets`` (docs/tasks.md
    #taskhf; medprobe.data.tasks.hf_task)."""

    # a Hub id (org/name; downloaded once by datasets into its cache) or a local folder:
    # save_to_disk output, parquet files, or an imagefolder (relative: under data_root)
    path: str | None = None
    config_name: str | None = None  # the Hub dataset's configuration (subset), if it has several
    revision: str | None = None  # Hub: branch, tag or commit (a commit makes the run reproducible)
    image_column: str | None = None  # null = the dataset's one Image column
    label_column: str = "label"  # ClassLabel, string or int; a list of them = multi-label
    label_columns: list[str] | None = None  # multi-label: one 0/1 column per finding
    patient_column: str | None = None  # patient / group ids: splits and bootstrap keep them whole
    classes: list[str] | None = None  # class order; null = the ClassLabel's names, else sorted
    # dataset split -> train | val | test (SplitRole), e.g. {train: train, validation: val,
    # test: test}; null = by name (train, val/valid/validation/dev, test/testing); unlisted
    # splits unused. Typed Any: OmegaConf cannot merge an override into a typed dict that is
    # null, nor add keys to an empty one in struct mode; the adapter checks the roles.
    splits: Any = None
    split_by: SplitBy = SplitBy.auto
    on_bad_row: OnBadRow = OnBadRow.stop  # rows without a label


@schema
@dataclass
class PaperTaskConfig(TaskConfig):
    """Keys of every paper dataset adapter (T1-T8)."""

    root: str | None = "${data_root}"
    on_bad_row: OnBadRow = OnBadRow.stop


@schema
@dataclass
class T1TaskConfig(PaperTaskConfig):
    """T1 colorectal tissue: official NCT-CRC-HE-100K / CRC-VAL-HE-7K split."""

    metric: TaskMetric = TaskMetric.f1_macro


@schema
@dataclass
class T2Options:
    plip_counting: bool = False  # count nuclei as PLIP's released code does (docs/tasks.md#t2)


@schema
@dataclass
class T2TaskConfig(PaperTaskConfig, RandomSplit):
    """T2 PanNuke benign vs malignant patches; 70/30 split within tissue x label (PLIP)."""

    metric: TaskMetric = TaskMetric.f1_macro
    test_fraction: float = 0.3
    derived_dir: str | None = None  # patch PNGs; null = <root>/.medprobe/pannuke_png
    options: T2Options = field(default_factory=T2Options)


@schema
@dataclass
class T3TaskConfig(PaperTaskConfig, RandomSplit):
    """T3 ISIC 2018 / HAM10000 (split used when the official test labels are absent)."""

    image_dir: str | None = None  # search images only under <root>/<image_dir>
    # without lesion ids (official files only): refuse (false) or split by image, saying so
    allow_image_level_split: bool = False


@schema
@dataclass
class T4TaskConfig(PaperTaskConfig, RandomSplit):
    """T4 ISIC 2020 benign vs malignant, patient-level split."""

    csv: str | None = None  # the ISIC 2020 metadata CSV; null = found under root
    image_dir: str | None = None  # search images only under <root>/<image_dir>


@schema
@dataclass
class T5Options:
    eyepacs_test: EyepacsTest = EyepacsTest.train


@schema
@dataclass
class T5TaskConfig(PaperTaskConfig):
    """T5 diabetic retinopathy: EyePACS -> train, APTOS 2019 -> test."""

    options: T5Options = field(default_factory=T5Options)


@schema
@dataclass
class T6Options:
    # positive: the paper tests on all 7,000 ODIR eyes; AIROGS trains on *referable* glaucoma
    suspected_glaucoma: SuspectedGlaucoma = SuspectedGlaucoma.positive


@schema
@dataclass
class T6TaskConfig(PaperTaskConfig):
    """T6 glaucoma: AIROGS -> train, ODIR-2019 -> test."""

    csv: str | None = None  # the ODIR annotations: official .xlsx or UTF-8 CSV; null = found
    options: T6Options = field(default_factory=T6Options)


@schema
@dataclass
class T7TaskConfig(PaperTaskConfig):
    """T7 PadChest multi-label findings (the classes come from the data)."""

    csv: str | None = None  # the PadChest label CSV (.csv or .csv.gz); null = found under root
    min_test_positives: int = 50  # findings kept need this many positives in test
    # missing / unreadable image files are left out and listed; more than this share stops
    max_bad_image_share: float = 0.01


@schema
@dataclass
class T8Options:
    test_cohort: str | None = "MOST"  # cohort tested on when several are present; null = split


@schema
@dataclass
class T8TaskConfig(PaperTaskConfig, RandomSplit):
    """T8 knee KL grade from knee_kl.csv; optional ROI crop and left-knee flip."""

    csv: str | None = None  # null = <root>/knee_kl.csv
    roi_boxes: str | None = None  # CSV image,x0,y0,x1,y1 (pixels) -> crop before probing
    flip_left: bool = False  # mirror left knees so every knee looks like a right knee
    derived_dir: str | None = None  # cropped / flipped PNGs; null = <root>/.medprobe/knee
    options: T8Options = field(default_factory=T8Options)


#: Adapter kind -> its task schema, registered as ``schema/task/<kind>`` in the ConfigStore.
TASK_SCHEMAS: dict[str, type[TaskConfig]] = {
    "demo": DemoTaskConfig,
    "csv": CsvTaskConfig,
    "hf": HfTaskConfig,
    "t1": T1TaskConfig,
    "t2": T2TaskConfig,
    "t3": T3TaskConfig,
    "t4": T4TaskConfig,
    "t5": T5TaskConfig,
    "t6": T6TaskConfig,
    "t7": T7TaskConfig,
    "t8": T8TaskConfig,
}


@schema
@dataclass
class PromptConfig:
    """Text given to models that read a prompt (ignored by vision-only models)."""

    name: str = MISSING
    text: str = ""


#: The probe's candidate inverse regularisation strengths (a log grid; the one place it is
#: written: :class:`medprobe.probe.LogisticProbe` uses it too).
DEFAULT_C_GRID: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)


@schema
@dataclass
class ProbeConfig:
    """Linear probe; C is chosen on a validation split carved from train, never on test."""

    name: str = MISSING
    C_grid: list[float] = field(default_factory=lambda: list(DEFAULT_C_GRID))
    class_weight: ClassWeight | None = None
    max_iter: int = 1000
    val_fraction: float = 0.2
    # null = the task's primary metric (task.metric), resolved by the pipeline and recorded in
    # results.json probe.selection_metric
    selection_metric: SelectionMetric | None = None
    # train_fraction is a fraction of the labelled pool (fit + validation rows) or of the fit
    # rows only (validation rows in full, the behaviour before issue 13)
    fraction_of: FractionOf = FractionOf.pool
    # Solver of the same objective; device (auto = cuda if available, else cpu; cpu | cuda |
    # cuda:N) and dtype apply to the torch backend only.
    backend: ProbeBackend = ProbeBackend.sklearn
    device: str = "auto"
    dtype: ProbeDType = ProbeDType.float32


@schema
@dataclass
class TrackerConfig:
    name: TrackerName = MISSING
    mode: TrackerMode = TrackerMode.auto
    project: str = "medprobe"
    entity: str | None = None
    group: str | None = None
    name_prefix: str = ""
    tags: list[str] = field(default_factory=list)
    dir: str | None = None


@schema
@dataclass
class DataConfig:
    on_error: OnError = OnError.stop
    fingerprint: ImageFingerprint = ImageFingerprint.content
    max_side: int = 1024  # larger images are downsampled to this longest side (pixels)
    scan_workers: int = 4
    # read images whose path leads outside the dataset root (a symlink out, '../'): refused by
    # default (medprobe.data.images.check_inside_root); true reads them and records them
    allow_outside_root: bool = False


@schema
@dataclass
class CacheConfig:
    """Feature-cache behaviour (the folder is the top-level ``cache_dir``)."""

    # check every file read against the checksum recorded at finalise, once per file per
    # process (docs/reliability.md); false trusts the files (a hash costs ~0.3-0.7x a load)
    verify: bool = True


@schema
@dataclass
class BootstrapConfig:
    n: int = 1000
    ci: float = 0.95
    # auto = patients where the task has patient ids (T3-T8, task=csv with patient_id), else
    # images (T1, T2, demo); docs/statistics.md
    unit: ResamplingUnit = ResamplingUnit.auto
    auroc_ci: AurocCI = AurocCI.delong_logit


@schema
@dataclass
class ClusterConfig:
    """Resources of each job of a ``-m`` sweep run by ``cluster=local|slurm`` (conf/cluster/).

    ``hydra.launcher`` (hydra-submitit-launcher) interpolates these keys; ``cluster=none`` (the
    default) leaves Hydra's launcher alone and ignores them. null = the scheduler's default.
    """

    name: ClusterName = MISSING
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    gpus_per_node: int | None = None
    cpus_per_task: int | None = None
    mem_gb: int | None = None
    timeout_min: int = 240
    array_parallelism: int = 256  # SLURM: at most this many array tasks run at once
    # SLURM: processes per job; > 1 = data-parallel extraction inside each job, one process per
    # GPU (set it to gpus_per_node; medprobe.distributed, docs/scale.md)
    tasks_per_node: int = 1
    setup: list[str] = field(default_factory=list)  # SLURM: shell lines run before the job
    additional_parameters: dict[str, Any] = field(default_factory=dict)  # SLURM: more sbatch flags


@schema
@dataclass
class Config:
    """The whole run. Top-level scalars are what sweeps vary."""

    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    bootstrap: BootstrapConfig = field(default_factory=BootstrapConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    # Layer probed: an int (0 = stem/embedding output, k = output of block/stage k, -1 = last),
    # a named layer of the model (CLIP: pooled, embeds), or all (every cached layer, one job).
    layer: Any = -1
    # Fraction of the training split used to fit the probe (stratified, seeded); val/test
    # untouched.
    train_fraction: float = 1.0
    seed: int = 0
    # Root of user datasets (task.root defaults to it). Machine paths come from config or env.
    data_root: str | None = "${oc.env:MEDPROBE_DATA_ROOT,null}"
    cache_dir: str = "${oc.env:MEDPROBE_CACHE_DIR,${oc.env:HOME,.}/.cache/medprobe}"
    # Where results.json goes; null = Hydra's job folder (outputs/<task>/<model>/<time>).
    output_dir: str | None = None
    # replace results of another job in output_dir (refused by default: medprobe.pipeline.job
    # claim_output_dir); a rerun of the same job always may
    overwrite: bool = False
    # Filled in by the Hydra app for the pipeline (medprobe.cli.run), which reads no Hydra
    # globals: the job's command-line overrides (recorded in results.json, W&B run names) and,
    # in a -m sweep, the sweep folder's name (the W&B group).
    overrides: list[str] = field(default_factory=list)
    sweep_group: str | None = None
    progress: bool = True
    # data-parallel launches (torchrun, accelerate launch, SLURM tasks): how long a process
    # waits for the others (minutes), e.g. while rank 0 hashes images or waits for the cache lock
    dist_timeout_min: float = 720.0
