"""What each op costs, measured on the real modules, for the efficiency term of the search loss.

- params: parameter count of the op at the space's width H.
- flops: FLOPs of one forward at batch 1 and the space's `cost_length`, counted by `torch.utils.flop_counter`
  (matmuls and convolutions; pools, identity and zero count 0).
- latency (optional, FBNet-style lookup table): median milliseconds of one forward on the current device.

The normalised cost in [0, 1] that enters the loss is
    'params_flops': cost(o) = (params(o) / max params + flops(o) / max flops) / 2
    'latency':      cost(o) = latency(o) / max latency
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from adabert.errors import AdabertError
from adabert.ops import build_op
from adabert.search_config import COST_KINDS
from adabert.search_space import SearchSpace

@dataclass
class OpCosts:
    ops: tuple[str, ...]
    params: list[int]
    flops: list[int]
    latency_ms: list[float] | None
    normalised: torch.Tensor  # [n_ops]
    kind: str

    def as_dict(self) -> dict:
        return {"kind": self.kind, "ops": list(self.ops), "params": self.params, "flops": self.flops,
                "latency_ms": self.latency_ms, "normalised": [round(float(c), 6) for c in self.normalised]}


def _median_ms(fn, repeats: int = 30) -> float:
    for _ in range(5):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return sorted(times)[len(times) // 2]


def measure_op_costs(space: SearchSpace, kind: str = "params_flops", device: torch.device | None = None) -> OpCosts:
    if kind not in COST_KINDS:
        raise AdabertError(f"--cost: expected one of {', '.join(COST_KINDS)}, got {kind!r}")
    device = device or torch.device("cpu")
    x = torch.randn(1, space.cost_length, space.hidden_size, device=device)
    mask = torch.ones(1, space.cost_length, dtype=torch.bool, device=device)
    params, flops, lat = [], [], []
    for name in space.ops:
        op = build_op(name, space.hidden_size).to(device).eval()
        params.append(sum(p.numel() for p in op.parameters()))
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            op(x, mask)
        flops.append(int(counter.get_total_flops()))
        if kind == "latency":
            with torch.no_grad():
                lat.append(_median_ms(lambda: op(x, mask)))
    if kind == "latency":
        norm = torch.tensor(lat) / max(lat)
    else:
        p, f = torch.tensor(params, dtype=torch.float), torch.tensor(flops, dtype=torch.float)
        norm = (p / p.max().clamp_min(1) + f / f.max().clamp_min(1)) / 2
    return OpCosts(space.ops, params, flops, lat or None, norm, kind)
