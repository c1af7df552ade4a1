"""Data-parallel training across processes with torch.distributed, launched by `torchrun`.

    torchrun --nproc_per_node 2 -m adabert search ...      (gloo on CPU, nccl on CUDA: one GPU per process)

Every process holds the whole model and the same random state; each step, each takes its share
`rows[rank::world]` of the global batch (so the global batch stays --batch-size), the gradients are averaged
with one all-reduce of a flat buffer, and every process applies the same update, so the models never drift
apart. This is what DistributedDataParallel does, done by hand because the students and the supernet are
trained through other methods than `forward` (per-depth heads, sampled paths), which DDP's hooks do not see.
Only rank 0 writes files, logs and TensorBoard; with one process every function here is a no-op.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.distributed as dist

from adabert.core.errors import AdabertError


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def init_from_env(device_name: str) -> str:
    """Join the process group when started by torchrun (WORLD_SIZE > 1); returns the device to use (with CUDA,
    the process's own GPU)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return device_name
    cuda = device_name.startswith("cuda") or (device_name == "auto" and torch.cuda.is_available())
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda and local >= torch.cuda.device_count():
        raise AdabertError(f"--device {device_name}: torchrun started local rank {local}, but torch sees "
                           f"{torch.cuda.device_count()} GPU(s) here (one GPU per process); start at most that many "
                           "processes per node, or use --device cpu")
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    if cuda:
        torch.cuda.set_device(local)
        return f"cuda:{local}"
    return device_name


def shard(rows: np.ndarray) -> np.ndarray:
    """This process's share of a global batch (all of it when it has fewer rows than there are processes)."""
    return rows if len(rows) < world_size() else rows[rank()::world_size()]


def share(local: int, total: int) -> float:
    """Factor that turns the mean loss over this process's `local` rows into its share of the mean over all
    `total` rows, once gradients are averaged over processes: local * world / total."""
    return local * world_size() / total


def average_gradients(params) -> None:
    """Average the gradients of `params` over all processes (one all-reduce of a flat buffer)."""
    if world_size() == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset: offset + g.numel()].view_as(g))
        offset += g.numel()


def mean_over_processes(values: torch.Tensor, weight: float = 1.0) -> torch.Tensor:
    """sum_r weight_r * values_r / sum_r weight_r (detached): e.g. per-row means over shards of unequal size."""
    if world_size() == 1:
        return values.detach()
    buf = torch.cat([values.detach().reshape(-1).float() * weight, values.new_tensor([weight]).float()])
    dist.all_reduce(buf)
    return (buf[:-1] / buf[-1]).view_as(values).to(values.dtype)


def from_main(value: int) -> int:
    """Rank 0's `value` on every process: a decision only rank 0 can make (it reads files rank 0 alone wrote)."""
    if world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()
