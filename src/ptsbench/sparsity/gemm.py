"""The GEMM view of a prunable layer (docs/methods.md#decisions): the axis N:M patterns, Wanda norms and the
SparseGPT Hessian are all defined on.

A Linear computes y = W x with W of shape (out, in). A Conv2d with ``groups`` groups computes,
per group g, Y_g = W_g X_g: W_g is (out/groups, in/groups*kH*kW), the weight flattened per output
channel in (channel, kh, kw) order, and X_g the unfolded (im2col) input of that group's channels,
one column per output position. So a conv is ``groups`` independent GEMMs whose input features are
(input channel, kernel position) pairs; a depthwise conv is ``channels`` GEMMs of kH*kW features.
Everything here works on the batched view (G, rows, cols), G = 1 for a Linear.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

UNFOLD_BUDGET = 2**25  # unfolded elements per slice (128 MB fp32): im2col of a big map in pieces


def num_groups(module: nn.Module) -> int:
    return module.groups if isinstance(module, nn.Conv2d) else 1


def gemm_weight(module: nn.Module) -> torch.Tensor:
    """The weight as (G, rows, cols), a view of ``module.weight``."""
    w = module.weight
    g = num_groups(module)
    return w.reshape(g, w.shape[0] // g, -1)


def gemm_cols(module: nn.Module) -> int:
    """Length of the GEMM input dimension (per group): in_features, or in/groups*kH*kW."""
    w = module.weight
    return w[0].numel()


def input_slices(module: nn.Module, x: torch.Tensor):
    """The layer's GEMM inputs for input ``x``, as (G, n, cols) slices of at most UNFOLD_BUDGET
    elements (n = samples x output positions; a Linear's tokens count as positions)."""
    if not isinstance(module, nn.Conv2d):
        rows = x.reshape(-1, x.shape[-1])
        step = max(1, UNFOLD_BUDGET // rows.shape[1])
        for s in range(0, rows.shape[0], step):
            yield rows[s:s + step].unsqueeze(0)
        return
    g = module.groups
    mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
    # conv pads (all padding modes, 'same' included) by _reversed_padding_repeated_twice
    pad = module._reversed_padding_repeated_twice
    if x.dim() == 3:
        x = x.unsqueeze(0)
    per_sample = gemm_cols(module) * g * _positions(module, x.shape[-2:])
    step = max(1, UNFOLD_BUDGET // per_sample)
    for s in range(0, x.shape[0], step):
        xs = F.pad(x[s:s + step], pad, mode=mode) if any(pad) else x[s:s + step]
        cols = F.unfold(xs, module.kernel_size, dilation=module.dilation, stride=module.stride)
        n, _, positions = cols.shape
        yield cols.reshape(n, g, -1, positions).permute(1, 0, 3, 2).reshape(g, n * positions, -1)


def _positions(module: nn.Conv2d, hw) -> int:
    pads = module._reversed_padding_repeated_twice  # (left, right, top, bottom)
    out = 1
    for i, size in enumerate(hw):
        padded = size + pads[2 - 2 * i] + pads[3 - 2 * i]
        span = module.dilation[i] * (module.kernel_size[i] - 1) + 1
        out *= max(0, (padded - span) // module.stride[i] + 1)
    return max(out, 1)
