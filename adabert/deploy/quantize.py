"""int8 dynamic quantisation of a loaded student for CPU inference.

`int8_dynamic` replaces every `nn.Linear` and `nn.LSTM` of a copy of the module with PyTorch's dynamically
quantised version: int8 weights, activations quantised per batch at run time, float outputs. The BiLSTM student
is then int8 throughout; the searched student only in its readouts and projections, because dynamic
quantisation has no kernel for the `Conv1d` of its cells (they stay float32), so its gains are small; a
transformer student gets int8 attention and feed-forward matrices. Accuracy and latency beside float32 are
measured by `adabert evaluate --int8` and `adabert bench --int8`.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn


def int8_dynamic(module: nn.Module) -> nn.Module:
    """A dynamically quantised (int8) copy of `module` in eval mode; the original is left as it is."""
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():  # the eager API is deprecated in favour of torchao, which we do not ship
        warnings.simplefilter("ignore")
        return quantize_dynamic(copy.deepcopy(module).eval(), {nn.Linear, nn.LSTM}, dtype=torch.qint8)
