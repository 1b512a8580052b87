"""DSnoT mask refinement (Zhang et al., ICLR 2024, "Dynamic Sparse No Training: Training-Free
Fine-tuning for Sparse LLMs"): swap pruned and kept weights within each output row so that the
layer's expected output moves back towards the dense one, at unchanged counts.

Rule, per output row i of the GEMM view (sparsity/gemm.py), with mu_j, var_j the mean and variance
of input feature j over the calibration inputs and c_ij = w_ij mu_j its expected contribution:
- the expected reconstruction error is e_i = sum over pruned j of c_ij (dense minus sparse output);
- regrow: the pruned weight that reduces e_i the most, the largest sgn(e_i) c_ij / var_j^p (p = 1:
  features that vary less give a more reliable expected reduction), among those with sgn(c_ij) = sgn(e_i);
- prune: among kept weights with sgn(c_ij) = -sgn(e_i) (removing them also reduces e_i), the one with
  the lowest Wanda score |w_ij| ||X_j||_2;
- swap both when |e_i| > threshold and the error after the swap keeps e_i's initial sign (so |e_i|
  strictly decreases); a row whose swap is refused, or whose candidates run out, stops for good;
  at most ``max_cycles`` swaps per row (the paper's stopping rule; reference: 50 cycles, p = 1).
Every swap removes one weight and restores one in the same row, so every row's and the layer's
count is exactly what the criterion chose. Any criterion's mask can be refined, and any
reconstruction can follow: this is a mask step.

As for Wanda here (criteria/wanda.py), the statistics come from one forward of the dense model
(the reference feeds each block the pruned model's outputs). The reference's threshold (0.1) is on
sums over 2,048-token sequences; ours is on the mean output, where that is ~5e-5: default 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .gemm import gemm_weight, input_count, input_sq_sums, input_sums


@dataclass
class InputMoments:
    """Per GEMM input feature over the calibration inputs, each (G, cols)."""

    mean: torch.Tensor
    var: torch.Tensor
    sq_norm: torch.Tensor  # ||X_j||_2^2, the sum of squares
    count: int


@torch.no_grad()
def input_moments(model, names, calib_inputs, forward=None, device="cpu", chunk_size=64) -> dict[str, InputMoments]:
    """Mean, variance and squared norm of every named layer's GEMM inputs over one forward of
    ``model`` (hooks, like Wanda's ``input_sq_norms``); layers the forward never reaches are absent."""
    forward = forward or (lambda m, x: m(x))
    acc: dict[str, list] = {}

    def hook(name):
        def accumulate(mod, args):
            x = args[0].detach().float()  # per-chunk sums in fp32, totals in fp64 (var = E[x^2] - E[x]^2)
            s, q, n = input_sums(mod, x).double(), input_sq_sums(mod, x).double(), input_count(mod, x)
            if name in acc:
                acc[name][0] += s
                acc[name][1] += q
                acc[name][2] += n
            else:
                acc[name] = [s, q, n]

        return accumulate

    handles = [model.get_submodule(n).register_forward_pre_hook(hook(n)) for n in names]
    try:
        for start in range(0, len(calib_inputs), chunk_size):
            forward(model, calib_inputs[start : start + chunk_size].to(device))
    finally:
        for h in handles:
            h.remove()
    out = {}
    for name, (s, q, n) in acc.items():
        mean = s / max(n, 1)
        out[name] = InputMoments(mean.float(), (q / max(n, 1) - mean.pow(2)).clamp_min(0).float(), q.float(), n)
    return out


@torch.no_grad()
def dsnot_refine(
    w: torch.Tensor,
    keep: torch.Tensor,
    moments: InputMoments,
    max_cycles: int = 50,
    var_power: float = 1.0,
    threshold: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Refined keep-mask of a GEMM weight ``w`` (G, rows, cols) and the swaps made per row (G, rows)."""
    g, r, c = w.shape
    w64, keep = w.double(), keep.reshape(g, r, c).bool()
    mu, var = moments.mean.double().unsqueeze(1), moments.var.double().unsqueeze(1)
    contrib = w64 * mu  # (G, R, C)
    err0 = (contrib * ~keep).sum(-1)  # (G, R)
    sign = torch.sign(err0).unsqueeze(-1)
    floor = var.amax().clamp_min(1e-300) * 1e-12
    inf = torch.tensor(float("inf"), dtype=torch.float64)
    # regrow: pruned weights that move e towards 0, the largest expected reduction per unit variance first
    grow_key = torch.where(~keep & (sign * contrib > 0), sign * contrib / var.clamp_min(floor).pow(var_power), -inf)
    # prune: kept weights whose removal also moves e towards 0, the lowest Wanda score first
    wanda = w64.abs() * moments.sq_norm.double().sqrt().unsqueeze(1)
    cut_key = torch.where(keep & (sign * contrib < 0), wanda, inf)
    t = min(max_cycles, c)
    grow_val, grow_idx = torch.sort(grow_key, dim=-1, descending=True, stable=True)
    cut_val, cut_idx = torch.sort(cut_key, dim=-1, stable=True)
    grow_val, grow_idx, cut_val, cut_idx = grow_val[..., :t], grow_idx[..., :t], cut_val[..., :t], cut_idx[..., :t]
    valid = torch.isfinite(grow_val) & torch.isfinite(cut_val)
    step = torch.where(valid, contrib.gather(-1, cut_idx) - contrib.gather(-1, grow_idx), 0.0)  # e_after - e
    before = err0.unsqueeze(-1) + torch.cat([torch.zeros_like(step[..., :1]), step.cumsum(-1)[..., :-1]], -1)
    after = before + step
    ok = valid & (before.abs() > threshold) & (torch.sign(after) == sign) & (sign != 0)
    done = ok.long().cumprod(-1).bool()  # a refused swap ends the row
    swaps = done.sum(-1)
    new = keep.clone()
    new.scatter_(-1, grow_idx, done | new.gather(-1, grow_idx))
    new.scatter_(-1, cut_idx, ~done & new.gather(-1, cut_idx))
    return new, swaps


@torch.no_grad()
def refine_masks(
    modules: dict, masks: dict[str, torch.Tensor], moments: dict[str, InputMoments], **knobs
) -> tuple[dict[str, torch.Tensor], dict]:
    """DSnoT on every layer that has pruned weights and calibration statistics; a report of the swaps
    per layer and the layers left as they were (never reached by the forward)."""
    out, swaps, skipped = dict(masks), {}, []
    for name, mask in masks.items():
        if bool(mask.all()):
            continue
        if name not in moments:
            skipped.append(name)
            continue
        w = gemm_weight(modules[name]).detach()
        new, per_row = dsnot_refine(w, mask.reshape(w.shape), moments[name], **knobs)
        out[name] = new.reshape(mask.shape)
        swaps[name] = int(per_row.sum())
    return out, {"refine": "dsnot", "dsnot_swaps": swaps, "dsnot_unreached": skipped, **knobs}
