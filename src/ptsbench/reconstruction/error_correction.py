"""Error correction, paper Eq. 1 (PTSBench §2.3.1, docs/methods.md#reconstruction).

Per output channel c of every masked layer:
1. weights:  lambda_c = std(W_d,c) / (std(W_s,c) + 1e-8);
             W_c <- lambda_c W_s,c + mean(W_d,c) - mean(lambda_c W_s,c), then re-masked,
   so the surviving weights get back the dense channel's spread and mean;
2. bias:     b_c <- b_d,c + E[f(W_d, X_d) - f(W_c, X_d)]_c, the mean over calibration batch and
   positions of the difference between the dense and the corrected sparse layer's outputs on
   the dense layer's inputs X_d, so the sparse layer's mean output matches the dense one.
``f`` is the layer without its bias (the bias enters both terms equally), and since it is
linear the difference is f(W_d - W_c, X_d), measured by hooks on the dense layers while the
dense model (or a dense unit) runs; a layer without a bias gets one.
"""

from __future__ import annotations

import contextlib
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from ..sparsity.layers import PrunableLayer

EPS = 1e-8


@torch.no_grad()
def corrected_weight(w_dense: torch.Tensor, w_sparse: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Eq. 1, weight part: per-output-channel affine match to the dense channel, re-masked."""
    wd = w_dense.flatten(1).double()
    ws = w_sparse.flatten(1).double()
    lam = wd.std(1, unbiased=False) / (ws.std(1, unbiased=False) + EPS)
    scaled = lam[:, None] * ws
    out = scaled + wd.mean(1, keepdim=True) - scaled.mean(1, keepdim=True)
    return out.view_as(w_sparse).masked_fill(~mask.to(out.device).bool(), 0.0).to(w_sparse.dtype)  # NaN*0 is NaN


def _no_bias_output(layer: nn.Module, weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    if isinstance(layer, nn.Conv2d):
        return layer._conv_forward(x, weight, None)
    return F.linear(x, weight)


def _channel_sum(y: torch.Tensor, layer: nn.Module) -> tuple[torch.Tensor, int]:
    # conv outputs keep channels in dim 1; Linear outputs (token sequences too) in the last dim
    if isinstance(layer, nn.Conv2d):
        return y.sum(dim=(0, 2, 3)), y.numel() // y.shape[1]
    return y.reshape(-1, y.shape[-1]).sum(0), y.numel() // y.shape[-1]


class ErrorCorrection:
    """Eq. 1 for the masked layers ``names`` of ``model``: corrected weights are computed at
    construction; bias shifts accumulate while ``measuring()`` is active and dense data flows
    through ``dense_model``; ``apply()`` writes both into ``model``."""

    def __init__(self, model: nn.Module, dense_model: nn.Module, masks: dict[str, torch.Tensor], names):
        self.names = [n for n in names if n in masks]
        self.layers = {n: cast(PrunableLayer, model.get_submodule(n)) for n in self.names}
        self.dense = {n: cast(PrunableLayer, dense_model.get_submodule(n)) for n in self.names}
        self.new_weights = {
            n: corrected_weight(self.dense[n].weight, self.layers[n].weight, masks[n]) for n in self.names
        }
        self.sums = {
            n: torch.zeros(w.shape[0], dtype=torch.float64, device=w.device) for n, w in self.new_weights.items()
        }
        self.counts = dict.fromkeys(self.names, 0)

    @contextlib.contextmanager
    def measuring(self):
        deltas = {n: (self.dense[n].weight - self.new_weights[n]).detach() for n in self.names}

        def hook(mod, args, _out, name):
            with torch.no_grad():
                s, count = _channel_sum(_no_bias_output(mod, deltas[name], args[0].float()).double(), mod)
            self.sums[name] += s
            self.counts[name] += count

        handles = [self.dense[n].register_forward_hook(lambda m, a, o, n=n: hook(m, a, o, n)) for n in self.names]
        try:
            yield self
        finally:
            for h in handles:
                h.remove()

    @torch.no_grad()
    def apply(self) -> dict[str, float]:
        """Write corrected weights and biases; returns the mean |bias shift| per layer."""
        stats = {}
        for n, layer in self.layers.items():
            shift = (self.sums[n] / max(self.counts[n], 1)).to(layer.weight.dtype)
            dense_bias = self.dense[n].bias
            if layer.bias is None:
                layer.bias = nn.Parameter(torch.zeros_like(shift), requires_grad=False)
            layer.weight.copy_(self.new_weights[n])
            layer.bias.copy_((dense_bias if dense_bias is not None else 0.0) + shift)
            stats[n] = float(shift.abs().mean())
        return stats


@torch.no_grad()
def apply_error_correction(
    model: nn.Module,
    dense_model: nn.Module,
    masks: dict[str, torch.Tensor],
    calib_inputs: torch.Tensor,
    forward,
    device: torch.device,
    names=None,
    chunk_size: int = 256,
) -> dict[str, float]:
    """Correct the masked layers ``names`` (default: all) in one pass of the dense model."""
    ec = ErrorCorrection(model, dense_model, masks, masks if names is None else names)
    with ec.measuring():
        for start in range(0, len(calib_inputs), chunk_size):
            forward(dense_model, calib_inputs[start : start + chunk_size].to(device))
    return ec.apply()
