"""Wanda criterion (Sun et al., ICLR 2024, "A Simple and Effective Pruning Approach for LLMs", §3;
docs/methods.md#decisions): score S_ij = |W_ij| * ||X_j||_2, where X_j is input feature j of the layer's GEMM over
every calibration sample and position (a Linear: in_features; a conv: input channel x kernel
position of the unfolded input, see sparsity/gemm.py). A weight on a feature that carries large
activations is kept even when it is small.

Activations come from ONE forward of the dense model (BN folded) over the calibration set, with
a hook on every prunable layer. Wanda's reference code instead re-feeds each transformer block
the output of the already-pruned previous blocks; for a mask criterion we keep the dense model's
inputs so the criterion is independent of the reconstruction that follows and costs one forward
(the sequential, sparse-input variant is what ``reconstruction=sparsegpt`` does). A layer the
forward never calls (no inputs seen) falls back to |w| and is listed in the record.
"""

from __future__ import annotations

import torch

from ..gemm import gemm_weight, input_sq_sums
from . import CRITERIA, Criterion, ScoreContext


@torch.no_grad()
def input_sq_norms(model, modules: dict, context: ScoreContext) -> dict[str, torch.Tensor]:
    """sum over calibration samples/positions of x_j^2, per layer as (G, cols)."""
    sums: dict[str, torch.Tensor] = {}

    def hook(name):
        def accumulate(mod, args):
            s = input_sq_sums(mod, args[0].detach().float())
            sums[name] = sums[name] + s if name in sums else s

        return accumulate

    handles = [model.get_submodule(n).register_forward_pre_hook(hook(n)) for n in modules]
    try:
        x_all, forward = context.calib_inputs, context.forward
        assert x_all is not None and forward is not None  # needs_calibration: the mask phase passes both
        for start in range(0, len(x_all), context.chunk_size):
            forward(model, x_all[start : start + context.chunk_size].to(context.device))
    finally:
        for h in handles:
            h.remove()
    return sums


@CRITERIA.register("wanda", label="Wanda", needs_calibration=True)
class Wanda(Criterion):
    def scores(self, modules, context):
        sums = input_sq_norms(context.dense_model, modules, context)
        out, unseen = {}, []
        for name, m in modules.items():
            w = gemm_weight(m).detach().abs()
            if name not in sums:
                unseen.append(name)
                out[name] = m.weight.detach().abs()
                continue
            out[name] = (w * sums[name].sqrt().unsqueeze(1)).reshape(m.weight.shape)
        context.report["wanda_magnitude_fallback"] = unseen
        return out
