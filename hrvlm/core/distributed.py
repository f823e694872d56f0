"""Several processes, one job: PyTorch's process group as ``torchrun`` sets it up (gloo on the CPU;
on GPUs NCCL for CUDA tensors and gloo for CPU ones, such as :meth:`Dist.mean`'s).  Training
(:mod:`hrvlm.training.train`) runs DDP over it; evaluation (:mod:`hrvlm.evaluation.evaluate`) splits its datasets across
ranks.  With ``WORLD_SIZE`` unset or 1 everything is a no-op.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def device(self, requested: str | torch.device | None = None) -> torch.device:
        """``requested`` (checked: :func:`hrvlm.core.environment.check_device`), else this rank's GPU, else the CPU."""
        from hrvlm.core.environment import check_device

        return check_device(requested or (f"cuda:{self.local_rank}" if torch.cuda.is_available() else "cpu"))

    def gather(self, obj) -> list:
        """``obj`` of every rank, in rank order."""
        if self.world == 1:
            return [obj]
        out = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out

    def broadcast(self, obj):
        """Rank 0's ``obj`` on every rank."""
        if self.world == 1:
            return obj
        out = [obj]
        torch.distributed.broadcast_object_list(out, src=0)
        return out[0]

    def mean(self, value: float) -> float:
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64)
        torch.distributed.all_reduce(t)
        return float(t) / self.world

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()


def init_distributed(timeout: timedelta | None = None) -> Dist:
    """Join the process group that ``torchrun`` describes (``WORLD_SIZE`` > 1), else a single process.
    ``timeout`` bounds every collective (PyTorch's default when None: 10 min for NCCL, 30 for gloo)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist()
    import torch.distributed as dist

    if not dist.is_initialized():
        # NCCL alone has no backend for CPU tensors ("No backend type associated with device type cpu")
        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend, **({"timeout": timeout} if timeout is not None else {}))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
    return Dist(dist.get_rank(), dist.get_world_size(), local)
