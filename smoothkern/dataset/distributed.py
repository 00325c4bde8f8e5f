"""The process group a data-set job runs in: one process, or torch.distributed ranks.

Every collective here is issued by every rank in the same order, so a rank that fails reports
it through the next collective (:meth:`Ranks.round_done`) instead of leaving the others waiting.
Collectives use tensors on the group's device: the rank's GPU under NCCL, the CPU under gloo.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


class RankFailed(RuntimeError):
    """Another rank of the job failed, or the process group is not set up as the job needs;
    the store keeps every finished chunk."""


@dataclass(frozen=True)
class Ranks:
    """This process's place in the job.

    Attributes:
        rank: this process's rank in ``group`` (0 when not distributed).
        world: processes in the job.
        group: the torch.distributed group (None: the default group, or no group at all).
        device: where collectives put their tensors.
    """

    rank: int = 0
    world: int = 1
    group: Any = None
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def leader(self) -> bool:
        return self.rank == 0

    def share(self, items: list[int]) -> list[int]:
        """This rank's part of ``items``: every world-th item, from position ``rank``."""
        return items[self.rank::self.world]

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (a picklable object)."""
        if not self.distributed:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=self._global(0), group=self.group)
        return box[0]

    def sum(self, values: Tensor) -> Tensor:
        """The element-wise sum of ``values`` (float64 Tensor[k]) over the ranks."""
        if not self.distributed:
            return values
        import torch.distributed as dist

        summed = values.to(self.device)
        dist.all_reduce(summed, group=self.group)
        return summed.cpu()

    def round_done(self, images: int, failed: bool) -> tuple[int, list[int]]:
        """One collective per round of chunks: images finished by all ranks this round, and the
        ranks that failed (every rank learns of a failure at the same point)."""
        values = torch.zeros(1 + self.world, dtype=torch.float64)
        values[0] = images
        values[1 + self.rank] = float(failed)
        total = self.sum(values)
        return int(total[0]), [r for r in range(self.world) if total[1 + r] > 0]

    def gather(self, state: Tensor) -> list[Tensor]:
        """Every rank's ``state`` (the same shape and dtype on every rank), in rank order."""
        if not self.distributed:
            return [state]
        import torch.distributed as dist

        local = state.to(self.device).contiguous()
        parts = [torch.empty_like(local) for _ in range(self.world)]
        dist.all_gather(parts, local, group=self.group)
        return [p.cpu() for p in parts]

    def _global(self, group_rank: int) -> int:
        if self.group is None:
            return group_rank
        import torch.distributed as dist

        return dist.get_global_rank(self.group, group_rank)


def current_ranks(group: Any = None) -> Ranks:
    """The job's ranks: those of ``group`` (or the default group) when torch.distributed is
    initialised, else a single process.

    Raises:
        RuntimeError: started by torchrun with several processes (``WORLD_SIZE`` > 1) but no
            process group was set up, which would make every process do the whole job.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        backend = dist.get_backend(group)
        device = torch.device("cpu")
        if backend == "nccl":
            device = torch.device("cuda", torch.cuda.current_device())
        return Ranks(dist.get_rank(group), dist.get_world_size(group), group, device)
    if group is not None:
        raise ValueError("group was given but torch.distributed is not initialised")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise RankFailed(
            f"started as one of {os.environ['WORLD_SIZE']} processes (WORLD_SIZE) but "
            "torch.distributed is not initialised: call smoothkern.dataset.init_distributed() "
            "(or torch.distributed.init_process_group) first, or every process would do the "
            "whole job")
    return Ranks()


def init_distributed() -> tuple[torch.device, bool]:
    """Joins the process group torchrun describes in the environment, if there is one.

    gloo when torch sees no GPU; NCCL otherwise, with rank r on ``cuda:LOCAL_RANK``. Does
    nothing in a plain single process or when a group is already initialised.

    Returns:
        (the device this rank should compute on, whether a group was created here: the caller
        then ends it with ``torch.distributed.destroy_process_group()``).
    """
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world <= 1 or (dist.is_available() and dist.is_initialized()):
        return device, False
    if not dist.is_available():
        raise RuntimeError("this torch build has no torch.distributed")
    if cuda:
        dist.init_process_group("nccl", device_id=device)
    else:
        dist.init_process_group("gloo")
    return device, True
