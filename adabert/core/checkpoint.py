"""Crash-safe training checkpoints: one safetensors file per run, written atomically (temporary file, then
rename), so a run killed at any moment leaves either the previous checkpoint or the new one, never a mix.

The file holds every tensor (model and best weights, optimiser moments, the torch RNG state) and, in its header,
a JSON record of the rest (step, history, optimiser groups, scheduler states, and the run's inputs and settings,
which a resume must match). Nothing is pickled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from adabert.core.errors import AdabertError
from adabert.core.fileio import load_tensors, save_tensors


def optimizer_tensors(prefix: str, opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list]:
    """The optimiser's per-parameter state as tensors `prefix.INDEX.KEY`, and its (JSON-able) param groups."""
    sd = opt.state_dict()
    tensors = {f"{prefix}.{idx}.{k}": (v if torch.is_tensor(v) else torch.tensor(v))
               for idx, st in sd["state"].items() for k, v in st.items()}
    return tensors, sd["param_groups"]


def restore_optimizer(prefix: str, opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: list) -> None:
    """Inverse of `optimizer_tensors`."""
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        if key.startswith(prefix + "."):
            idx, k = key[len(prefix) + 1:].split(".", 1)
            state.setdefault(int(idx), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": groups})


def prefixed(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v for k, v in tensors.items()}


def unprefixed(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def save_checkpoint(path: Path, tensors: dict[str, torch.Tensor], record: dict[str, Any]) -> None:
    """Write tensors and a JSON record into one safetensors file, atomically."""
    save_tensors(path, tensors, {"record": json.dumps(record)})


def read_record(path: Path, what: str = "checkpoint") -> dict[str, Any]:
    """The JSON record of a checkpoint file (without loading its tensors)."""
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        record = json.loads(meta.get("record", "null"))
    except (SafetensorError, OSError, ValueError, RecursionError) as e:
        raise AdabertError(f"{path}: {what} is not a readable checkpoint ({e})") from None
    if not isinstance(record, dict):
        raise AdabertError(f"{path}: {what} holds no record of its run")
    return record


def load_checkpoint(path: Path, what: str = "checkpoint") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    return load_tensors(path, what), read_record(path, what)
