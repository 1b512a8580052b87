"""RIA criterion (Zhang et al., ICLR 2024, "Plug-and-Play: An Efficient Post-training Pruning Method
for Large Language Models"): relative importance and activations.

Rule: on the GEMM view (sparsity/gemm.py; a conv is one GEMM per group),
    S_ij = (|W_ij| / sum_k |W_ik| + |W_ij| / sum_k |W_kj|) * ||X_j||_2 ** a,   a = 0.5,
the weight's share of its output row's and of its input column's absolute mass, times the input
feature's calibration norm to the power a. A weight that matters for its row or for its input
channel survives even when it is small globally, which keeps whole channels from being emptied.
||X_j||_2 comes from one forward of the dense model, as for Wanda (criteria/wanda.py). RIA compares
scores over the whole layer (its reference prunes per layer unless told to go per output row), so
the ``method=ria`` preset uses ``sparsity.group=layer``.
"""

from __future__ import annotations

import torch

from ..gemm import gemm_weight
from . import CRITERIA, Criterion
from .wanda import input_sq_norms

EXPONENT = 0.5  # a in the paper (its default and recommended value)


def ria_scores(w: torch.Tensor, sq_norms: torch.Tensor | None, a: float = EXPONENT) -> torch.Tensor:
    """RIA scores of a GEMM weight (G, rows, cols) given the inputs' summed squares (G, cols); without
    them (a layer the forward never reached) the relative importance alone. An all-zero row or column
    contributes 0 rather than 0/0."""
    w = w.detach().abs()
    row = w.sum(-1, keepdim=True)
    col = w.sum(-2, keepdim=True)
    rel = torch.where(row > 0, w / row.clamp_min(1e-30), 0.0) + torch.where(col > 0, w / col.clamp_min(1e-30), 0.0)
    if sq_norms is None:
        return rel
    return rel * sq_norms.sqrt().pow(a).unsqueeze(1)


@CRITERIA.register("ria", label="RIA", needs_calibration=True)
class RIA(Criterion):
    def scores(self, modules, context):
        sums = input_sq_norms(context.dense_model, modules, context)
        out, unseen = {}, []
        for name, m in modules.items():
            if name not in sums:
                unseen.append(name)
            out[name] = ria_scores(gemm_weight(m), sums.get(name)).reshape(m.weight.shape)
        context.report["ria_no_activation"] = unseen
        return out
