"""The GEMM view of a prunable layer (docs/methods.md#decisions): the axis Wanda norms and the SparseGPT
Hessian are defined on (N:M groups use its columns in (kh, kw, c) order instead: selection.nm_column_order).

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

from . import conv_gram
from .layers import PrunableLayer

UNFOLD_BUDGET = 2**25  # unfolded elements per slice (128 MB fp32): im2col of a big map in pieces


def num_groups(module: nn.Module) -> int:
    return module.groups if isinstance(module, nn.Conv2d) else 1


def gemm_weight(module: PrunableLayer) -> torch.Tensor:
    """The weight as (G, rows, cols), a view of ``module.weight``."""
    w = module.weight
    g = num_groups(module)
    return w.reshape(g, w.shape[0] // g, -1)


def gemm_cols(module: PrunableLayer) -> int:
    """Length of the GEMM input dimension (per group): in_features, or in/groups*kH*kW."""
    w = module.weight
    return w[0].numel()


def input_slices(module: PrunableLayer, x: torch.Tensor):
    """The layer's GEMM inputs for input ``x``, as (G, n, cols) slices of at most UNFOLD_BUDGET
    elements (n = samples x output positions; a Linear's tokens count as positions)."""
    if not isinstance(module, nn.Conv2d):
        rows = x.reshape(-1, x.shape[-1])
        step = max(1, UNFOLD_BUDGET // rows.shape[1])
        for s in range(0, rows.shape[0], step):
            yield rows[s : s + step].unsqueeze(0)
        return
    g = module.groups
    mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
    # conv pads (all padding modes, 'same' included) by _reversed_padding_repeated_twice; TF 'same' by size
    pad = conv_gram.conv_pad(module, x.shape[-2:])
    if x.dim() == 3:
        x = x.unsqueeze(0)
    per_sample = gemm_cols(module) * g * _positions(module, x.shape[-2:])
    step = max(1, UNFOLD_BUDGET // per_sample)
    for s in range(0, x.shape[0], step):
        xs = F.pad(x[s : s + step], pad, mode=mode) if any(pad) else x[s : s + step]
        cols = F.unfold(xs, module.kernel_size, dilation=module.dilation, stride=module.stride)
        n, _, positions = cols.shape
        yield cols.reshape(n, g, -1, positions).permute(1, 0, 3, 2).reshape(g, n * positions, -1)


def _positions(module: nn.Conv2d, hw) -> int:
    ho, wo = conv_gram.out_size(module, hw)
    return max(ho * wo, 1)


def input_sq_sums(module: PrunableLayer, x: torch.Tensor) -> torch.Tensor:
    """sum over samples and positions of each GEMM input feature squared, as (G, cols): the diagonal
    of X X^T without unfolding. A conv's feature (c, kh, kw) sees the padded input at rows
    kh*dilation + stride*i; summing x^2 over the batch first and then taking kH*kW strided slices
    costs about one pass over x instead of a kH*kW-times larger im2col copy."""
    if not isinstance(module, nn.Conv2d):
        return x.reshape(-1, x.shape[-1]).pow(2).sum(0).unsqueeze(0)
    if x.dim() == 3:
        x = x.unsqueeze(0)
    return _position_sums(module, x.pow(2).sum(0, keepdim=True))


def input_sums(module: PrunableLayer, x: torch.Tensor) -> torch.Tensor:
    """sum over samples and positions of each GEMM input feature, as (G, cols): X 1 without
    unfolding (the same strided slices as ``input_sq_sums``, on x instead of x^2)."""
    if not isinstance(module, nn.Conv2d):
        return x.reshape(-1, x.shape[-1]).sum(0).unsqueeze(0)
    if x.dim() == 3:
        x = x.unsqueeze(0)
    return _position_sums(module, x.sum(0, keepdim=True))


def _position_sums(module: nn.Conv2d, summed: torch.Tensor) -> torch.Tensor:
    """(G, cols) sums of a batch-summed input map (1, C, H, W) over the positions each (c, kh, kw)
    feature sees."""
    pad = conv_gram.conv_pad(module, summed.shape[-2:])
    if any(pad):  # reflect/replicate/circular remap indices, so they commute with squaring and summing
        summed = F.pad(summed, pad, mode="constant" if module.padding_mode == "zeros" else module.padding_mode)
    sq = summed[0]
    (kh, kw), (sh, sw), (dh, dw) = module.kernel_size, module.stride, module.dilation
    ho = (sq.shape[1] - dh * (kh - 1) - 1) // sh + 1
    wo = (sq.shape[2] - dw * (kw - 1) - 1) // sw + 1
    out = torch.stack(
        [
            sq[:, i * dh : i * dh + sh * (ho - 1) + 1 : sh, j * dw : j * dw + sw * (wo - 1) + 1 : sw].sum((1, 2))
            for i in range(kh)
            for j in range(kw)
        ],
        dim=1,
    )  # (C, kH*kW), (c, kh, kw) order
    return out.reshape(module.groups, -1)


def input_count(module: PrunableLayer, x: torch.Tensor) -> int:
    """Number of GEMM input columns (samples x output positions; a Linear's tokens) in ``x``."""
    if not isinstance(module, nn.Conv2d):
        return x.reshape(-1, x.shape[-1]).shape[0]
    if x.dim() == 3:
        x = x.unsqueeze(0)
    return x.shape[0] * _positions(module, x.shape[-2:])


def add_input_gram(module: PrunableLayer, x: torch.Tensor, h: torch.Tensor | None) -> tuple[torch.Tensor, int]:
    """h + X X^T over the GEMM inputs of ``x`` (h: (G, cols, cols) or None) and the number of input
    columns added. Stride-1 zero-padded convs go through conv_gram.lag_gram (the same sum, one GEMM
    per kernel lag); other convs multiply each slice's im2col block, gathered as
    (G, cols, samples x positions), by its transpose."""
    g, cols = num_groups(module), gemm_cols(module)
    if h is None:
        h = torch.zeros(g, cols, cols, device=x.device, dtype=x.dtype)
    if not isinstance(module, nn.Conv2d):
        rows = x.reshape(-1, x.shape[-1])
        h[0].addmm_(rows.T, rows)
        return h, rows.shape[0]
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if conv_gram.applies(module, x):  # stride-1 convs: per-lag GEMMs, no im2col (2-5x faster)
        h += conv_gram.lag_gram(module, x)
        return h, x.shape[0] * _positions(module, x.shape[-2:])
    mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
    pad = conv_gram.conv_pad(module, x.shape[-2:])
    step = max(1, UNFOLD_BUDGET // (cols * g * _positions(module, x.shape[-2:])))
    n_cols = 0
    for s in range(0, x.shape[0], step):
        xs = F.pad(x[s : s + step], pad, mode=mode) if any(pad) else x[s : s + step]
        unf = F.unfold(xs, module.kernel_size, dilation=module.dilation, stride=module.stride)
        n, positions = unf.shape[0], unf.shape[-1]
        # one (G, cols, n*positions) GEMM for the slice: a per-sample loop costs a small-GEMM launch
        # per image (128 per layer in the demo), the copy stays within the slice budget
        unf = unf.reshape(n, g, cols, positions).permute(1, 2, 0, 3).reshape(g, cols, n * positions)
        h.baddbmm_(unf, unf.transpose(1, 2))
        n_cols += n * positions
    return h, n_cols


def add_cross_gram(
    module: PrunableLayer, x_left: torch.Tensor, x_right: torch.Tensor, c: torch.Tensor | None
) -> torch.Tensor:
    """c + X_left X_right^T over paired GEMM inputs (same samples, same positions; (G, cols, cols)).
    The asymmetric SparseGPT target needs it with X_left the dense model's and X_right the sparse
    model's input of the same layer."""
    g, cols = num_groups(module), gemm_cols(module)
    if c is None:
        c = torch.zeros(g, cols, cols, device=x_right.device, dtype=x_right.dtype)
    if isinstance(module, nn.Conv2d) and x_left.dim() == 3:
        x_left, x_right = x_left.unsqueeze(0), x_right.unsqueeze(0)
    if conv_gram.applies(module, x_right):
        return c.add_(conv_gram.lag_gram(module, x_left, x_right))
    for left, right in zip(input_slices(module, x_left), input_slices(module, x_right), strict=True):
        c.baddbmm_(left.transpose(1, 2), right)
    return c
