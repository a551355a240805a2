"""Multi-process training helpers around ``torch.distributed``.

A run started by ``torchrun --nproc_per_node N`` sees ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``
and ``MASTER_ADDR``/``MASTER_PORT`` in its environment; :func:`init_distributed` then joins the
process group (NCCL on GPUs, gloo on CPU) and picks this process's device. Without those
variables everything degrades to a single process and no process group is created, so the same
loop serves both cases.

:class:`ResumableSampler` is a :class:`~torch.utils.data.DistributedSampler` that can start
in the middle of an epoch, which makes an interrupted run continue with exactly the batches
it would have seen.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset, DistributedSampler


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def distributed(self) -> bool:
        """Whether a process group is in use (``world_size > 1``)."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes logs, checkpoints and exports."""
        return self.rank == 0


def init_distributed(device: str | None = None, timeout_s: float = 1800.0) -> DistInfo:
    """Join the process group described by the torchrun environment, if any.

    Parameters
    ----------
    device:
        ``"cpu"``, ``"cuda"`` or ``None`` (CUDA when available). With CUDA each process takes
        the GPU ``LOCAL_RANK``.
    timeout_s:
        Collective timeout (a validation on one rank must not time the others out).

    Returns
    -------
    DistInfo
    """
    use_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        dev = torch.device("cuda", local if world > 1 else torch.cuda.current_device())
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if use_cuda else "gloo",
            rank=rank,
            world_size=world,
            timeout=timedelta(seconds=timeout_s),
        )
    return DistInfo(rank=rank, world_size=world, local_rank=local, device=dev)


def cleanup_distributed() -> None:
    """Leave the process group if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op in a single process)."""
    if info.distributed:
        dist.barrier()


def all_reduce_sum(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum a tensor over ranks (returns a new tensor; identity in a single process)."""
    if not info.distributed:
        return values
    out = values.detach().clone().to(info.device)
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out.to(values.device)


def any_rank(flag: bool, info: DistInfo) -> bool:
    """True on every rank when ``flag`` is true on at least one (e.g. a stop request)."""
    if not info.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def replicas_max_difference(model: nn.Module, info: DistInfo) -> float:
    """Largest elementwise difference of the parameters between any two ranks (0 when alone).

    DDP keeps replicas identical by construction; this is a cheap sanity check for logs/tests.
    """
    if not info.distributed:
        return 0.0
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).to(info.device)
    hi, lo = flat.clone(), flat.clone()
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    return float((hi - lo).max().item())


class ResumableSampler(DistributedSampler):
    """A :class:`DistributedSampler` whose epoch can start after ``skip`` batches.

    The permutation of epoch ``e`` depends only on ``(seed, e)``, as in the parent class, so a
    resumed run rebuilds it and drops the ``skip * batch_size`` indices it already consumed.
    It yields ``epoch * len(dataset) + index`` so that a dataset can derive per-epoch
    randomness from the index alone (see :class:`mel2mel.train.data.SeededCrops`); such a
    dataset reduces the index modulo its length.

    Parameters
    ----------
    dataset:
        The map-style dataset.
    batch_size:
        Per-process batch size (used to turn ``skip`` batches into indices).
    num_replicas, rank:
        From :class:`DistInfo` (1 and 0 in a single process; no process group needed).
    seed:
        Shuffling seed shared by all ranks.
    """

    def __init__(
        self,
        dataset: Dataset,
        *,
        batch_size: int,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        shuffle: bool = True,
    ) -> None:
        super().__init__(
            dataset,
            num_replicas=num_replicas,
            rank=rank,
            shuffle=shuffle,
            seed=seed,
            drop_last=True,
        )
        self.batch_size = batch_size
        self.skip = 0

    def set_position(self, epoch: int, skip_batches: int = 0) -> None:
        """Start epoch ``epoch`` after its first ``skip_batches`` batches."""
        self.set_epoch(epoch)
        self.skip = skip_batches * self.batch_size

    def batches_per_epoch(self) -> int:
        """Full batches this rank draws per epoch (the DataLoader drops the last partial one)."""
        return self.num_samples // self.batch_size

    def __iter__(self) -> Iterator[int]:
        offset = self.epoch * len(self.dataset)
        indices = list(super().__iter__())[self.skip :]
        return iter([offset + i for i in indices])

    def __len__(self) -> int:
        return max(self.num_samples - self.skip, 0)
