"""One magnitude threshold per layer, applied to every layer in one vectorized pass (FCPTS, SPEC §2).

All prunable weights are concatenated into one flat tensor with a layer index per element, so
"layer l keeps |w| above t_l" is a handful of element-wise kernels over the whole model instead
of a Python loop over layers (on a GPU: a few launches per step and no host sync). Magnitudes
are pre-scaled by each layer's largest |w|, so a = |w| / max|w_l| lies in [0, 1] and every
threshold t_l = sigmoid(theta_l) can reach any allocation of its layer.

``FlatLayers.masks(t)`` returns (keep mask of every weight, sparsity of every layer):
- forward, exact: M_i = 1[a_i > t_l], s_l = fraction of layer l with a_i <= t_l. The magnitudes
  and thresholds are float64 so a threshold placed between two float32 weights stays there.
- backward, the straight-through estimator: moving t_l by dt prunes the weights with
  a in (t_l, t_l + dt], so the step's derivative dM_i/dt_l is replaced by -K(a_i - t_l), a kernel
  of the layer's bandwidth, and the task loss reaches t_l through every weight near it.
  ds_l/dt_l is the density of a at t_l (the paper's KDE "bridge"): Gaussian KDE reflected at 0
  (a = |w| is folded, so this is the density of w at +t and -t), or a normalised histogram.
"""
from __future__ import annotations

import math

import torch

_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


class _ThresholdMask(torch.autograd.Function):
    @staticmethod
    def forward(ctx, t, flat):
        t_e = t[flat.layer_of]
        keep = flat.mag > t_e
        kept = torch.zeros_like(t).index_add_(0, flat.layer_of, keep.to(t.dtype))
        ctx.flat = flat
        ctx.save_for_backward(t)
        return keep.to(flat.weight.dtype), 1.0 - kept / flat.numel_t

    @staticmethod
    def backward(ctx, grad_mask, grad_sparsity):
        (t,) = ctx.saved_tensors
        flat = ctx.flat
        kernel, density = flat.kernel_and_density(t)
        grad_t = torch.zeros_like(t)
        if grad_mask is not None:
            grad_t.index_add_(0, flat.layer_of, -(grad_mask.to(t.dtype) * kernel))
        if grad_sparsity is not None:
            grad_t = grad_t + grad_sparsity * density
        return grad_t, None


class FlatLayers:
    """The prunable weights of a model as one flat tensor plus what thresholding needs."""

    def __init__(self, weights: dict[str, torch.Tensor], device, kde: str = "gaussian",
                 bandwidth: str | float = "silverman", bins: int = 100):
        self.names = list(weights)
        self.shapes = [tuple(w.shape) for w in weights.values()]
        self.numels = [w.numel() for w in weights.values()]
        ws = [w.detach().to(device).flatten() for w in weights.values()]
        self.weight = torch.cat(ws)
        scale = [w.abs().max().double().clamp_min(1e-30) for w in ws]
        self.mag = torch.cat([w.abs().double() / s for w, s in zip(ws, scale)])
        self.numel_t = torch.tensor(self.numels, dtype=torch.float64, device=device)
        self.layer_of = torch.repeat_interleave(torch.arange(len(ws), device=device),
                                                torch.tensor(self.numels, device=device))
        self.kde, self.bins = kde, int(bins)
        if bandwidth == "silverman":  # normal reference rule on the signed scaled weights
            self.bandwidth = torch.stack([1.06 * (w.double() / s).std(unbiased=False) * n ** -0.2
                                          for w, s, n in zip(ws, scale, self.numels)]).clamp_min(1e-6)
        else:
            self.bandwidth = torch.full((len(ws),), float(bandwidth), dtype=torch.float64, device=device)
        if kde == "histogram":  # density of a on `bins` equal bins of [0, 1], one row per layer
            self.bin_of = (self.mag * self.bins).long().clamp_max(self.bins - 1)
            counts = torch.zeros(len(ws) * self.bins, dtype=torch.float64, device=device)
            counts.index_add_(0, self.layer_of * self.bins + self.bin_of, torch.ones_like(self.mag))
            self.hist = counts.view(len(ws), self.bins) * self.bins / self.numel_t[:, None]

    def masks(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(keep mask over the flat weights, per-layer sparsity), both differentiable in t."""
        return _ThresholdMask.apply(t, self)

    def kernel_and_density(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-weight STE kernel K(a_i - t_l) and per-layer density of a at t_l."""
        if self.kde == "histogram":
            t_bin = (t * self.bins).long().clamp(0, self.bins - 1)
            density = self.hist.gather(1, t_bin[:, None]).squeeze(1)
            kernel = (self.bin_of == t_bin[self.layer_of]).to(t.dtype) * self.bins
            return kernel, density
        h = self.bandwidth[self.layer_of]
        t_e = t[self.layer_of]
        kernel = torch.exp(-0.5 * ((self.mag - t_e) / h) ** 2) * (_INV_SQRT_2PI / h)
        mirror = torch.exp(-0.5 * ((self.mag + t_e) / h) ** 2) * (_INV_SQRT_2PI / h)
        density = torch.zeros_like(t).index_add_(0, self.layer_of, kernel + mirror) / self.numel_t
        return kernel, density

    @torch.no_grad()
    def pruned_counts(self, t: torch.Tensor) -> list[int]:
        """Exact number of weights at or below each threshold (one host sync; not for loops)."""
        pruned = torch.zeros_like(t).index_add_(0, self.layer_of, (self.mag <= t[self.layer_of]).to(t.dtype))
        return [int(c) for c in pruned.round().long().tolist()]

    @torch.no_grad()
    def thresholds_for_counts(self, counts: list[int]) -> torch.Tensor:
        """Per-layer thresholds in (0, 1) that prune exactly counts[l] weights of layer l.

        The threshold sits halfway between the k-th and (k+1)-th smallest magnitude; when those
        tie, no threshold separates them and the tied weights are all pruned.
        """
        out = []
        for mag, k in zip(torch.split(self.mag, self.numels), counts):
            srt = torch.sort(mag).values
            if k <= 0:
                t = srt[0] / 2
            elif k >= srt.numel():
                t = srt[-1]
            else:
                t = (srt[k - 1] + srt[k]) / 2 if srt[k] > srt[k - 1] else srt[k - 1]
            out.append(t)
        return torch.stack(out).clamp(1e-12, 1.0 - 1e-12)

    def split(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """Per-layer tensors (views) of a flat tensor laid out like ``self.weight``."""
        return [p.view(s) for p, s in zip(torch.split(flat, self.numels), self.shapes)]
