"""Process-wide settings for a run: seeds, device, threads, autocast and logging."""

from __future__ import annotations

import contextlib
import logging
import random
import sys

import numpy as np
import torch

from adabert.core.errors import AdabertError

log = logging.getLogger("adabert")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is when a record is emitted (tests, notebooks and wrappers swap it; a
    handler bound to the stream of its creation would write to a closed one)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def setup_logging(verbose: bool = False) -> None:
    """adabert's own messages at INFO (DEBUG with verbose) on stderr, warnings only from processes other than rank
    0 under torchrun; other libraries keep their defaults."""
    from adabert.core.distributed import is_main

    if not log.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S"))
        log.addHandler(handler)
        log.propagate = False
    log.setLevel((logging.DEBUG if verbose else logging.INFO) if is_main() else logging.WARNING)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    if not verbose:
        hf_logging.disable_progress_bar()


@contextlib.contextmanager
def quiet_info():
    """Inside, adabert's INFO lines are dropped unless -v (DEBUG) is on: for inner runs, e.g. the selection's
    candidate finetunes, whose one-line summary the caller logs. Warnings still show."""
    level = log.level
    if level > logging.DEBUG:
        log.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        log.setLevel(level)


def summary_level(index: int, total: int, lines: int = 4) -> int:
    """INFO for `lines` evenly spaced evaluations out of `total` (always the last), DEBUG for the others: a run's
    log at default verbosity stays a few lines long however many evaluations it makes (all of them go to
    TensorBoard, the metrics files and -v)."""
    if total <= lines:
        return logging.INFO
    picked = {round((k + 1) * total / lines) - 1 for k in range(lines)}
    return logging.INFO if index in picked else logging.DEBUG


def set_seed(seed: int) -> None:
    """Seed Python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when present, else CPU; 'cuda' without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise AdabertError(f"--device: {name} requested but no CUDA GPU is available; use --device cpu")
    if name != "cpu" and not name.startswith("cuda"):
        raise AdabertError(f"--device: expected cpu, cuda, cuda:N or auto, got {name!r}")
    return torch.device(name)


def set_threads(threads: int | None) -> None:
    if threads is not None:
        if threads < 1:
            raise AdabertError(f"--threads: expected a positive integer, got {threads}")
        torch.set_num_threads(threads)


def autocast(device: torch.device, enabled: bool = True, cpu: bool = False) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA devices that support it; on a CPU only with `cpu` (a student's training steps under
    `--bf16`: matrix products and convolutions in bfloat16, reductions and the losses in float32), else a no-op."""
    if enabled and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if enabled and cpu and device.type == "cpu":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def warn_if_emulated_bf16(what: str) -> None:
    """Warn that `what` will run slower under --bf16 than in float32 when this CPU has no native bfloat16."""
    native = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)  # a private torch API
    if not native():
        log.warning("--bf16: this CPU has no native bfloat16 (AVX-512 bf16 or AMX); %s will be slower than in "
                    "float32", what)


def progress(iterable, **kwargs):
    """A tqdm progress bar on a terminal (rank 0 only under torchrun), silent otherwise (logs carry the
    summaries)."""
    from tqdm.auto import tqdm

    from adabert.core.distributed import is_main

    return tqdm(iterable, disable=None if is_main() else True, dynamic_ncols=True, leave=False, **kwargs)
