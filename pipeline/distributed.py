"""Start-up under torchrun, shared by training (DistributedDataParallel) and embedding.

torchrun tells each process who it is through RANK, WORLD_SIZE and LOCAL_RANK; without
torchrun a process is rank 0 of 1. On a GPU each rank takes the device LOCAL_RANK.

    t2i train coco_clip                                           # one process
    torchrun --nproc_per_node=8 --no-python t2i train coco_clip   # 8 ranks, NCCL (gloo on CPU)
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes checkpoints, logs and shared files."""
        return self.rank == 0


def torchrun_ranks() -> Ranks:
    env = os.environ
    return Ranks(
        int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0))
    )


def rank_device(device: torch.device, ranks: Ranks) -> torch.device:
    """With several ranks on GPUs, each rank's own GPU (LOCAL_RANK)."""
    if device.type == "cuda" and ranks.world > 1:
        device = torch.device("cuda", ranks.local)
        torch.cuda.set_device(device)
    return device


def start_distributed(device: torch.device) -> tuple[torch.device, Ranks]:
    """Under torchrun (WORLD_SIZE > 1): join the process group; NCCL on GPU, gloo on CPU."""
    ranks = torchrun_ranks()
    device = rank_device(device, ranks)
    if ranks.world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device, ranks


def stop_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
