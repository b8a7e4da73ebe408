"""Process-group helpers for data-parallel training launched by ``torchrun``.

``torchrun --nproc_per_node=K`` sets ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``
and ``MASTER_PORT``; :func:`init_distributed` reads them and starts the process group (``gloo``
on CPU, ``nccl`` on CUDA). A single process (no ``WORLD_SIZE`` or ``WORLD_SIZE=1``) needs nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "init_distributed", "world_info"]


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in a data-parallel job.

    Attributes:
        rank: Global rank (0 writes checkpoints and logs).
        world_size: Number of processes.
        local_rank: Rank on this node (selects the CUDA device).
        initialized_here: Whether :func:`init_distributed` started the process group (and so
            should destroy it).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        """True on rank 0."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when more than one process takes part."""
        return self.world_size > 1


def world_info() -> DistInfo:
    """Read rank and world size from the running process group or the ``torchrun`` environment.

    Example:
        >>> world_info().world_size >= 1
        True
    """
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return DistInfo(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                    int(os.environ.get("LOCAL_RANK", 0)))


def init_distributed(device: torch.device) -> DistInfo:
    """Start the process group when launched with ``WORLD_SIZE > 1`` (no-op otherwise).

    Args:
        device: Device of the model; selects ``nccl`` (CUDA) or ``gloo`` (CPU).

    Returns:
        The :class:`DistInfo` of this process.
    """
    info = world_info()
    if not info.distributed or dist.is_initialized():
        return info
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but torch.distributed is not available in this build")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend, init_method="env://")
    return DistInfo(dist.get_rank(), dist.get_world_size(), info.local_rank, initialized_here=True)
