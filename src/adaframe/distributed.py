"""Data-parallel runs across processes launched by torchrun (``torch.distributed``: gloo on CPU, nccl on GPU).

Training splits every *global* batch of ``--batch-size`` videos across the processes and draws every random
number (exploration noise, sampled frames) for the whole global batch on each process, keeping its own rows.
So N processes compute what one process computes with the same batch, up to floating-point summation order,
and a run may be resumed with another number of processes.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Sampler


@dataclass(frozen=True)
class Shard:
    """This process's share of the work: global batch row ``rank + world * j`` is its local row ``j``."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        """Only the first process writes files and prints."""
        return self.rank == 0

    def draw(self, fn: Callable[..., torch.Tensor], shape: tuple[int, ...], **kwargs: Any) -> torch.Tensor:
        """``fn(shape, **kwargs)`` drawn for the global batch (``shape[0]`` local rows per process), this process's rows."""
        if self.world == 1:
            return fn(shape, **kwargs)
        whole = fn((shape[0] * self.world, *shape[1:]), **kwargs)  # [world * B, ...]
        return whole[self.rank::self.world]  # [B, ...]

    def mean(self, x: torch.Tensor) -> torch.Tensor:
        """The mean of ``x`` over the processes (no gradient); ``x`` itself in a single process."""
        if self.world == 1:
            return x
        x = x.detach().clone()
        dist.all_reduce(x)
        return x / self.world

    def std(self, x: torch.Tensor) -> torch.Tensor:
        """The (unbiased) std of the entries of ``x`` on all processes together, as ``x.std()`` of one process."""
        if self.world == 1:
            return x.std()
        x = x.detach().double().flatten()
        moments = torch.stack([torch.tensor(float(x.numel()), dtype=x.dtype, device=x.device), x.sum(), x.pow(2).sum()])
        dist.all_reduce(moments)
        n, s, ss = moments
        return ((ss - s * s / n) / (n - 1)).clamp(min=0).sqrt().float()


def randn(shape: tuple[int, ...], *, generator: torch.Generator | None = None, device: Any = None) -> torch.Tensor:
    return torch.randn(shape, generator=generator, device=device)


def rand(shape: tuple[int, ...], *, generator: torch.Generator | None = None, device: Any = None,
         dtype: torch.dtype | None = None) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=device, dtype=dtype)


def exponential(shape: tuple[int, ...], *, generator: torch.Generator | None = None, device: Any = None) -> torch.Tensor:
    return torch.empty(shape, device=device).exponential_(1.0, generator=generator)


def start(device: torch.device) -> tuple[Shard, torch.device]:
    """Join the process group when launched by torchrun (``WORLD_SIZE`` > 1); returns the shard and this process's device.

    nccl for CUDA (one GPU per process, ``LOCAL_RANK``), gloo otherwise.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Shard(), device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Shard(dist.get_rank(), dist.get_world_size()), device


def stop() -> None:
    """Leave the process group. Objects in reference cycles may still hold it (and gloo's pending work): collected
    first, so the group ends here rather than in the interpreter's teardown, where gloo's threads can abort the process."""
    if dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


def barrier(shard: Shard) -> None:
    if shard.world > 1:
        dist.barrier()


def gather(obj: Any, shard: Shard) -> list[Any]:
    """Every process's ``obj``, in rank order (a list of one in a single process)."""
    if shard.world == 1:
        return [obj]
    out: list[Any] = [None] * shard.world
    dist.all_gather_object(out, obj)
    return out


class ShardedRandomSampler(Sampler[int]):
    """Each epoch one random permutation of the data set, the same on every process (a generator seeded alike),
    cut to a multiple of the number of processes; process r takes items r, r + N, r + 2N, ...

    Batches of B / N items per process then make up exactly the global batches of B items that a single
    process gets from the same permutation. With one process it draws exactly what ``RandomSampler(generator=...)``
    draws (order and generator use).
    """

    def __init__(self, size: int, shard: Shard, generator: torch.Generator):
        self.size, self.shard, self.generator = size, shard, generator

    def __len__(self) -> int:
        return self.size // self.shard.world

    def __iter__(self) -> Iterator[int]:
        order = torch.randperm(self.size, generator=self.generator).tolist()
        torch.randperm(self.size, generator=self.generator)  # RandomSampler draws (and drops) a second one; so do we
        usable = order[: self.size - self.size % self.shard.world]
        yield from usable[self.shard.rank::self.shard.world]


def sharded_loader(dataset: Dataset, batch_size: int, shard: Shard, order: torch.Generator, **kwargs: Any) -> DataLoader:
    """This process's ``batch_size / world`` videos of each shuffled global batch of ``batch_size``.

    ``order`` also draws the loader's worker seed, as in ``DataLoader(shuffle=True, generator=order)``, which
    a single process builds exactly.
    """
    return DataLoader(dataset, batch_size=batch_size // shard.world, sampler=ShardedRandomSampler(len(dataset), shard, order),
                      generator=order, drop_last=len(dataset) > batch_size, **kwargs)
