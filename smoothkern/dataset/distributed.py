"""The process group a data-set job runs in: one process, or torch.distributed ranks.

Every collective here is issued by every rank in the same order, so a rank that fails reports
it through the next collective (:meth:`Ranks.round_done`) instead of leaving the others waiting.
Control messages (rounds, failures, broadcasts) go over a gloo group on the CPU, so that a rank
whose GPU failed still reports it; the data-set statistics are summed over the job's own group
(NCCL on the rank's GPU, gloo on the CPU).
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
        device: where the statistics' sums put their tensors (the rank's GPU under NCCL).
        control: the gloo group of the control messages (None: ``group`` itself, when it is a
            gloo group or there is none).
    """

    rank: int = 0
    world: int = 1
    group: Any = None
    device: torch.device = torch.device("cpu")
    control: Any = None

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
        group = self._control()
        dist.broadcast_object_list(box, src=self._global(0, group), group=group)
        return box[0]

    def sum(self, values: Tensor) -> Tensor:
        """The element-wise sum of ``values`` over the ranks, on the job's group and device
        (returned on the CPU)."""
        if not self.distributed:
            return values
        import torch.distributed as dist

        summed = values.to(self.device).contiguous()
        dist.all_reduce(summed, group=self.group)
        return summed.cpu()

    def round_done(self, images: int, failed: bool) -> tuple[int, list[int]]:
        """One collective per round of chunks, over the gloo control group: images finished by
        all ranks this round, and the ranks that failed (every rank learns of a failure at the
        same point)."""
        values = torch.zeros(1 + self.world, dtype=torch.float64)
        values[0] = images
        values[1 + self.rank] = float(failed)
        if self.distributed:
            import torch.distributed as dist

            dist.all_reduce(values, group=self._control())
        return int(values[0]), [r for r in range(self.world) if values[1 + r] > 0]

    def _control(self) -> Any:
        return self.control if self.control is not None else self.group

    def _global(self, group_rank: int, group: Any) -> int:
        if group is None:
            return group_rank
        import torch.distributed as dist

        return dist.get_global_rank(group, group_rank)


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
        device, control = torch.device("cpu"), None
        if backend == "nccl":
            device = collective_device(group)
            control = _control_group(group)
        return Ranks(dist.get_rank(group), dist.get_world_size(group), group, device, control)
    if group is not None:
        raise ValueError("group was given but torch.distributed is not initialised")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise RankFailed(
            f"started as one of {os.environ['WORLD_SIZE']} processes (WORLD_SIZE) but "
            "torch.distributed is not initialised: call smoothkern.dataset.init_distributed() "
            "(or torch.distributed.init_process_group) first, or every process would do the "
            "whole job")
    return Ranks()


def collective_device(group: Any = None) -> torch.device:
    """The GPU a NCCL group's collectives use on this rank: the one the group was bound to
    (``init_process_group(device_id=...)``), else the current device when the caller chose one
    (``torch.cuda.set_device``), else ``cuda:LOCAL_RANK`` as torchrun numbers the ranks of a
    node (the current device is cuda:0 on every rank when nobody chose, and ranks sharing one
    GPU in a collective hang or fail)."""
    import torch.distributed as dist

    try:
        bound = (group if group is not None else dist.distributed_c10d._get_default_group()
                 ).bound_device_id
    except (AttributeError, RuntimeError, ValueError):
        bound = None
    if bound is not None:
        return torch.device(bound)
    current = torch.cuda.current_device()
    local = os.environ.get("LOCAL_RANK")
    if current == 0 and local is not None and local.isdigit() and int(local) != 0:
        return torch.device("cuda", int(local))
    return torch.device("cuda", current)


# One gloo group per NCCL group (new_group is itself a collective: made once, by every rank at
# the same point), kept with the group it serves so that a group made after
# destroy_process_group() gets its own.
_CONTROL_GROUPS: dict[int, tuple[Any, Any]] = {}


def _control_group(group: Any) -> Any:
    import torch.distributed as dist

    served = group if group is not None else dist.distributed_c10d._get_default_group()
    entry = _CONTROL_GROUPS.get(id(served))
    if entry is None or entry[0] is not served:
        ranks = None if group is None else dist.get_process_group_ranks(group)
        entry = (served, dist.new_group(ranks=ranks, backend="gloo"))
        _CONTROL_GROUPS[id(served)] = entry
    return entry[1]


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
