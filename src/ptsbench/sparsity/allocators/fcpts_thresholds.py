"""One magnitude threshold per layer, applied to every layer in one vectorized pass (FCPTS, docs/methods.md#allocators).

All prunable weights are concatenated into one flat tensor, so "layer l keeps |w| above t_l" is
a handful of element-wise kernels over the whole model instead of a Python loop over layers (on
a GPU: a few launches per step and no host sync). Magnitudes are pre-scaled by each layer's
largest |w|, so a = |w| / max|w_l| lies in [0, 1] and every threshold t_l = sigmoid(theta_l) can
reach any allocation of its layer.

The learned parameter is each layer's *rank* u_l in [0, 1] (the fraction of its weights below the
threshold, docs/methods.md#decisions), not a logit: ``FlatLayers.thresholds_at(u)`` maps it to t_l by interpolating
between the layer's sorted magnitudes (u = k / N_l gives the threshold halfway between the k-th
and (k+1)-th smallest |w|, so an init allocation is reproduced exactly), and its backward is
dt/du = 1 / p_l(t) with p_l the density below. A sigmoid threshold has dt/dtheta = t (1 - t),
which vanishes for a layer the init leaves dense (t just below its smallest |w|): its gradient
was ~1e-4 of the others'. In rank space the control term's gradient is exactly N_l / N for every
layer (ds/du = p * 1/p) and the task gradient is the per-weight saliency at the threshold.

``FlatLayers.masks(t)`` returns (keep mask of every weight, sparsity of every layer):
- forward, exact: M_i = 1[a_i > t_l], s_l = fraction of layer l with a_i <= t_l. Magnitudes and
  thresholds are float64 so a threshold placed between two float32 weights stays there.
- backward, the straight-through estimator: moving t_l by dt prunes the weights with
  a in (t_l, t_l + dt], so the step's derivative dM_i/dt_l is replaced by -K_h(a_i - t_l), a
  Gaussian of the layer's KDE bandwidth h_l, and the task loss reaches t_l through every weight
  near it. ds_l/dt_l is the density of a at t_l (the paper's KDE "bridge"), i.e. the density of w
  at +t and -t: a Gaussian KDE reflected at 0, binned on a 1,024-point grid once (FFT) and read
  by linear interpolation, or (``kde: histogram``) a normalised histogram with a box-kernel STE.
"""

from __future__ import annotations

import math

import torch

KDE_GRID = 1024


class _ThresholdMask(torch.autograd.Function):
    @staticmethod
    def forward(ctx, t, flat):
        keep = flat.mag > flat.expand(t)
        kept = flat.segment_sum(keep.to(t.dtype))
        ctx.flat = flat
        ctx.save_for_backward(t)
        return keep.to(flat.weight.dtype), 1.0 - kept / flat.numel_t

    @staticmethod
    def backward(ctx, grad_mask, grad_sparsity):
        (t,) = ctx.saved_tensors
        flat = ctx.flat
        grad_t = torch.zeros_like(t)
        if grad_mask is not None:
            grad_t = grad_t - flat.segment_sum(grad_mask * flat.ste_kernel(t)).to(t.dtype)
        if grad_sparsity is not None:
            grad_t = grad_t + grad_sparsity * flat.density(t)
        return grad_t, None


class _RankThreshold(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, flat):
        ctx.flat = flat
        t = flat.knot_interp(u)
        ctx.save_for_backward(t)
        return t

    @staticmethod
    def backward(ctx, grad_t):
        (t,) = ctx.saved_tensors
        return grad_t / ctx.flat.density(t).clamp_min(ctx.flat.min_density), None


class FlatLayers:
    """The prunable weights of a model as one flat tensor plus what thresholding needs."""

    def __init__(
        self,
        weights: dict[str, torch.Tensor],
        device,
        kde: str = "gaussian",
        bandwidth: str | float = "silverman",
        bins: int = 100,
    ):
        self.names = list(weights)
        self.shapes = [tuple(w.shape) for w in weights.values()]
        self.numels = [w.numel() for w in weights.values()]
        ws = [w.detach().to(device).flatten() for w in weights.values()]
        self.weight = torch.cat(ws)
        scale = [w.abs().max().double().clamp_min(1e-30) for w in ws]
        self.mag = torch.cat([w.abs().double() / s for w, s in zip(ws, scale)])
        self.mag32 = self.mag.float()  # the smooth parts (kernels) need no float64
        self.numel_t = torch.tensor(self.numels, dtype=torch.float64, device=device)
        self.lengths = torch.tensor(self.numels, device=device)
        self.kde = kde
        if bandwidth == "silverman":  # normal reference rule on the signed scaled weights
            bw = torch.stack(
                [1.06 * (w.double() / s).std(unbiased=False) * n**-0.2 for w, s, n in zip(ws, scale, self.numels)]
            )
        else:
            bw = torch.full((len(ws),), float(bandwidth), dtype=torch.float64, device=device)
        self.bandwidth = bw.clamp_min(1.0 / KDE_GRID)
        self.min_density = 0.05  # dt/du <= 20: a gap in a layer's magnitudes is no infinite lever
        # knots: the threshold that prunes exactly k weights, k = 0..N_l (halfway between neighbours)
        knots, offsets = [], []
        offset = 0
        for mag in torch.split(self.mag, self.numels):
            srt = torch.sort(mag).values
            mid = torch.cat([srt[:1] / 2, (srt[:-1] + srt[1:]) / 2, srt[-1:]])
            knots.append(mid)
            offsets.append(offset)
            offset += mag.numel() + 1
        self.knots = torch.cat(knots)
        self.knot_offsets = torch.tensor(offsets, device=device)
        grid = int(bins) if kde == "histogram" else KDE_GRID
        self.bin_of = (self.mag * grid).long().clamp_max(grid - 1)
        layer_of = torch.repeat_interleave(torch.arange(len(ws), device=device), self.lengths)
        counts = torch.zeros(len(ws) * grid, dtype=torch.float64, device=device)
        counts = counts.index_add_(0, layer_of * grid + self.bin_of, torch.ones_like(self.mag)).view(len(ws), grid)
        if kde == "histogram":
            self.grid = counts * grid / self.numel_t[:, None]
        else:
            self.grid = _reflected_kde_on_grid(counts, self.bandwidth) / self.numel_t[:, None]
            self.inv_h = self.expand(1.0 / self.bandwidth).float()
            del self.bin_of

    def expand(self, per_layer: torch.Tensor) -> torch.Tensor:
        """One value per layer -> one per weight (views + one copy; no host sync)."""
        return torch.cat([per_layer[i : i + 1].expand(n) for i, n in enumerate(self.numels)])

    def segment_sum(self, per_weight: torch.Tensor) -> torch.Tensor:
        """Sum of a per-weight tensor over each layer (unsafe=True skips validity checks that sync)."""
        return torch.segment_reduce(per_weight, "sum", lengths=self.lengths, unsafe=True)

    def knot_interp(self, u: torch.Tensor) -> torch.Tensor:
        """Thresholds at ranks u (no gradient): linear between the knots of k = floor(u N) and k + 1."""
        pos = u.detach().double().clamp(0, 1) * self.numel_t
        lo = pos.floor().clamp_max(self.numel_t - 1).long()
        frac = pos - lo
        at = self.knot_offsets + lo
        return self.knots[at] * (1 - frac) + self.knots[at + 1] * frac

    def thresholds_at(self, u: torch.Tensor) -> torch.Tensor:
        """Per-layer thresholds for ranks u, differentiable in u (dt/du = 1 / density at t)."""
        return _RankThreshold.apply(u, self)

    def masks(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(keep mask over the flat weights, per-layer sparsity), both differentiable in t."""
        return _ThresholdMask.apply(t, self)

    def ste_kernel(self, t: torch.Tensor) -> torch.Tensor:
        """K(a_i - t_l) for every weight: the STE's stand-in for the step's derivative."""
        g = self.grid.shape[1]
        if self.kde == "histogram":  # box kernel: the weights in t's bin, per unit of a
            t_bin = (t * g).long().clamp(0, g - 1)
            return (self.bin_of == self.expand(t_bin)).float() * g
        z = (self.mag32 - self.expand(t.float())).mul_(self.inv_h)
        return z.square_().mul_(-0.5).exp_().mul_(self.inv_h).mul_(1.0 / math.sqrt(2.0 * math.pi))

    def density(self, t: torch.Tensor) -> torch.Tensor:
        """Per-layer density of a at t_l (= density of w at +-t_l): ds_l/dt_l."""
        g = self.grid.shape[1]
        rows = torch.arange(len(t), device=t.device)
        if self.kde == "histogram":
            return self.grid[rows, (t * g).long().clamp(0, g - 1)]
        pos = (t * g - 0.5).clamp(0, g - 1)  # grid point j sits at a = (j + 0.5) / g
        lo = pos.floor().long().clamp_max(g - 2)
        frac = pos - lo
        return self.grid[rows, lo] * (1 - frac) + self.grid[rows, lo + 1] * frac

    @torch.no_grad()
    def pruned_counts(self, t: torch.Tensor) -> list[int]:
        """Exact number of weights at or below each threshold (one host sync; not for loops)."""
        pruned = self.segment_sum((self.mag <= self.expand(t)).to(t.dtype))
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


def _reflected_kde_on_grid(counts: torch.Tensor, bandwidth: torch.Tensor) -> torch.Tensor:
    """Gaussian KDE of a >= 0 reflected at 0, times N, at the bin centres of ``counts`` (L, G).

    The counts and their mirror image span [-1, 1); zero padding of the same length keeps the
    circular FFT convolution from wrapping, and the Gaussian's transfer function is analytic.
    """
    n_layers, g = counts.shape
    signal = torch.cat(
        [counts.flip(1), counts, torch.zeros(n_layers, 2 * g, dtype=counts.dtype, device=counts.device)], 1
    )
    freq = torch.fft.rfftfreq(4 * g, d=1.0 / g).to(counts.device)  # cycles per unit of a
    transfer = torch.exp(-2 * math.pi**2 * (freq[None, :] * bandwidth[:, None]) ** 2)
    smoothed = torch.fft.irfft(torch.fft.rfft(signal, dim=1) * transfer, n=4 * g, dim=1)
    return smoothed[:, g : 2 * g].clamp_min(0) * g
