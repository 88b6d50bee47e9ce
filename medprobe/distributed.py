"""Data-parallel feature extraction: which process this is, and the few collectives it needs.

Launch one job on several processes with the launchers people already have::

    torchrun --nproc_per_node 4 -m medprobe task=t5 model=clip
    accelerate launch --multi_gpu --num_processes 4 -m medprobe task=t5 model=clip

(accelerate needs ``--multi_gpu``, also for CPU processes: without it, on a machine with
fewer than two GPUs, it starts a single process.) Both set ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR`` and
``MASTER_PORT``; the process group is created by accelerate's ``PartialState`` (gloo on CPU,
NCCL on GPUs). A submitit job with several tasks (``cluster=slurm`` or ``cluster=local`` with
``cluster.tasks_per_node > 1``) is mapped to the same variables by submitit's
``TorchDistributedEnvironment``. The runner (:func:`medprobe.runner.features`) shards the image
manifest into contiguous runs of whole batches, every process writes its rows into one partial
cache entry, and the main process finalises the entry once and fits the probe alone; the other
processes exit when the entry is complete.

Without those variables (a plain ``python -m medprobe``) nothing here imports torch or
accelerate and every collective is the identity.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from medprobe.errors import DistributedError  # noqa: F401 (re-exported)

__all__ = [
    "Dist",
    "DistributedError",
    "current",
    "finish",
    "launched_world_size",
    "rank_placement",
    "shard_ranges",
    "shard_rows",
]


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def _map_submitit_env() -> None:
    """Set torch.distributed variables from submitit's when a multi-task job launched us.

    A submitit job (``cluster=slurm`` or ``cluster=local`` with ``cluster.tasks_per_node > 1``)
    runs one task per process; submitit's ``TorchDistributedEnvironment`` says which one.
    """
    if "WORLD_SIZE" in os.environ or os.environ.get("SUBMITIT_EXECUTOR") not in ("slurm", "local"):
        return  # plain srun users launch torchrun
    from submitit import JobEnvironment

    try:
        tasks = JobEnvironment().num_tasks
    except Exception:  # not inside a submitit job after all (stray variable)
        return
    if tasks > 1:
        from submitit.helpers import TorchDistributedEnvironment

        TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


def launched_world_size() -> int:
    """Number of processes this job was launched with (``WORLD_SIZE``, else 1)."""
    _map_submitit_env()
    return max(1, _env_int("WORLD_SIZE", 1))


@dataclass(frozen=True)
class Dist:
    """This process's place in a data-parallel job (``world == 1``: a plain single process).

    Attributes:
        rank: global process number, 0 is the main process.
        world: number of processes.
        local_rank: number on this node (selects the GPU).
        local_world: processes on this node.
    """

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1

    @property
    def is_main(self) -> bool:
        """True on rank 0, the process that locks, finalises, probes and writes results."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait until every process gets here.

        Raises:
            DistributedError: another process stopped, or the wait exceeded the timeout.
        """
        if self.world > 1:
            from accelerate import PartialState

            with self._collective("wait for the other processes"):
                PartialState().wait_for_everyone()

    def broadcast(self, obj: Any) -> Any:
        """``obj`` of rank 0 on every process (picklable). Raises as :meth:`barrier`."""
        if self.world == 1:
            return obj
        from accelerate.utils import broadcast_object_list

        box = [obj]
        with self._collective("receive rank 0's decision"):
            broadcast_object_list(box, from_process=0)
        return box[0]

    def gather(self, items: Sequence[Any]) -> list[Any]:
        """Every process's ``items`` concatenated in rank order, on every process.

        Raises as :meth:`barrier`.
        """
        if self.world == 1:
            return list(items)
        from accelerate.utils import gather_object

        with self._collective("exchange results with the other processes"):
            return list(gather_object(list(items)))

    @contextlib.contextmanager
    def _collective(self, what: str) -> Iterator[None]:
        try:
            yield
        except Exception as e:  # gloo / NCCL: a peer closed its connection, or a timeout
            text = str(e)
            if "timed out" in text.lower() or "timeout" in text.lower():
                why = (
                    f"timed out (dist_timeout_min={_timeout_min:g}) trying to {what}; rank 0 "
                    "may be waiting for another job's lock on the same cache entry: raise "
                    "dist_timeout_min"
                )
            else:
                why = (
                    f"another process of this data-parallel job stopped while this one tried "
                    f"to {what}; its error is above"
                )
            raise DistributedError(f"rank {self.rank}/{self.world}: {why}") from None


_current: Dist | None = None
_timeout_min: float = 720.0


def current(timeout_min: float = 720.0) -> Dist:
    """This process's :class:`Dist`; the first call of a launched job creates the process group.

    Args:
        timeout_min: how long a collective waits (minutes). Generous by default: the main
            process hashes every image and may wait for another job's extraction (the cache
            lock) while the others wait for it.
    """
    global _current, _timeout_min
    if _current is not None:
        return _current
    _timeout_min = float(timeout_min)
    world = launched_world_size()
    if world == 1:
        _current = Dist()
        return _current
    import torch
    from accelerate import PartialState

    state = PartialState(
        cpu=not torch.cuda.is_available(),  # gloo on CPU (accelerate needs to be told)
        timeout=datetime.timedelta(minutes=float(timeout_min)),
    )
    if int(state.num_processes) != world:
        raise RuntimeError(
            f"launched with WORLD_SIZE={world} but accelerate set up {state.num_processes} "
            "process(es); refusing to run every process as the main one"
        )
    _current = Dist(
        rank=int(state.process_index),
        world=int(state.num_processes),
        local_rank=int(state.local_process_index),
        local_world=max(1, _env_int("LOCAL_WORLD_SIZE", int(state.num_processes))),
    )
    return _current


def finish() -> None:
    """End the data-parallel part: destroy the process group; this process is single from now.

    The main process goes on (probe, metrics, results) without waiting for the others.
    """
    global _current
    if _current is not None and _current.world > 1:
        import torch.distributed as torch_dist

        if torch_dist.is_initialized():
            torch_dist.destroy_process_group()
    _current = Dist()


def shard_rows(n: int, batch_size: int, rank: int, world: int) -> tuple[int, int]:
    """Rows ``[start, stop)`` of process ``rank`` when all ``n`` rows are to be extracted.

    The ``ceil(n / batch_size)`` batches of a single-process run are split as evenly as
    possible into contiguous runs, so every process forms exactly the batches a single process
    would: features match a single-process run bit for bit wherever a model's output does not
    depend on the batch it is in (the batch composition is the same).

    Args:
        n: rows to extract (>= 0). batch_size: >= 1. rank: 0 <= rank < world.

    Raises:
        ValueError: a bad argument.
    """
    if n < 0 or batch_size < 1 or world < 1 or not 0 <= rank < world:
        raise ValueError(f"bad shard: n={n}, batch_size={batch_size}, rank={rank}, world={world}")
    n_batches = -(-n // batch_size)
    b0, b1 = rank * n_batches // world, (rank + 1) * n_batches // world
    return min(b0 * batch_size, n), min(b1 * batch_size, n)


def shard_ranges(pending: Sequence[int], batch_size: int, world: int) -> list[tuple[int, int]]:
    """Row ranges, one per process, splitting the rows still to extract evenly in whole batches.

    ``pending`` are the sorted row indices not yet written (all rows on a fresh run, the gaps
    after a killed run). They are cut into ``ceil(len(pending) / batch_size)`` batches, split as
    in :func:`shard_rows`, and each process gets the row range spanning its batches (rows
    already written inside a range are skipped by its writer). So a resumed run keeps every
    process busy, and a fresh run gets exactly :func:`shard_rows`.

    Returns:
        ``world`` ranges ``(start, stop)``; empty ranges are ``(0, 0)``.

    Raises:
        ValueError: a bad argument.
    """
    rows = [int(x) for x in pending]
    m = len(rows)
    out = []
    for rank in range(world):
        a, b = shard_rows(m, batch_size, rank, world)
        out.append((rows[a], rows[b - 1] + 1) if b > a else (0, 0))
    return out


def rank_placement(
    device: str,
    device_map: Any,
    max_memory: dict[Any, Any] | None,
    *,
    local_rank: int,
    local_world: int,
    n_gpus: int,
) -> dict[str, Any]:
    """Model placement for one data-parallel process on a node with ``n_gpus`` GPUs.

    Each process gets its own GPUs: ``n_gpus // local_world`` of them, consecutive from
    ``local_rank * that``. A model placed by accelerate (``device_map`` auto/balanced/
    sequential, IDEFICS) is spread over those GPUs only, through ``max_memory`` (the user's
    limits kept for them, else each GPU's memory less 2 GiB; CPU offload limits kept as given); a ``device_map`` naming one CUDA
    device is moved to the process's first GPU; ``cpu`` or an explicit dict is left alone. With
    fewer GPUs than processes, processes share GPU ``local_rank % n_gpus``. Without GPUs, or
    with ``device=cpu``, nothing changes.

    Args:
        device, device_map, max_memory: the model config's (``model.device``,
            ``model.device_map``, ``model.max_memory`` as a plain dict or None).
        local_rank, local_world: this process's number on the node, and how many there are.
        n_gpus: visible CUDA devices (``torch.cuda.device_count()``).

    Returns:
        ``{"device": ..., "device_map": ..., "max_memory": ...}`` to set on the model config;
        limits read from the GPU are its total memory less 2 GiB, in MiB.
    """
    out: dict[str, Any] = {"device": device, "device_map": device_map, "max_memory": max_memory}
    if n_gpus < 1 or (device not in ("auto", "cuda") and not str(device).startswith("cuda")):
        return out
    per = n_gpus // local_world
    if per < 1:
        gpus = [local_rank % n_gpus]
    else:
        gpus = list(range(local_rank * per, (local_rank + 1) * per))
    out["device"] = f"cuda:{gpus[0]}"
    if isinstance(device_map, str) and device_map in ("auto", "balanced", "sequential"):
        given = {str(k): v for k, v in (max_memory or {}).items()}
        limits: dict[Any, Any] = {g: given.get(str(g)) or _gpu_total(g) for g in gpus}
        for k in ("cpu", "disk"):
            if k in given:
                limits[k] = given[k]
        out["max_memory"] = limits
    elif isinstance(device_map, str) and device_map.startswith("cuda"):
        out["device_map"] = f"cuda:{gpus[0]}"
    return out


def _gpu_total(index: int) -> str:
    """GPU ``index``'s memory for weights: its total less 2 GiB for the CUDA context and
    activations (docs/idefics.md, "The plan, before renting GPUs")."""
    import torch

    total = int(torch.cuda.get_device_properties(index).total_memory)
    return f"{max(total // 2, total - 2 * 2**30) // 2**20}MiB"
