"""FCPTS allocation (Gong et al., AAAI 2024, "Fast and Controllable Post-training Sparsity"), docs/methods.md#allocators.

Rule: each layer l prunes the weights whose scaled magnitude |w| / max|w_l| is at or below a
threshold t_l. The learned parameter is the layer's rank u_l (the fraction of its weights below
t_l; ``fcpts_thresholds.py``), started where it reproduces an existing allocation
exactly (``init: erk | l2norm``) and learned on the calibration images by
  loss = task + lambda * (S* - S(t)),   S(t) = sum_l N_l s_l(t_l) / sum_l N_l,
  task = KL(dense logits || sparse logits at temperature T) * T^2, or (``loss: mse``, and wherever
         the outputs are not (batch, classes) logits: detection, diffusion) the MSE of the model
         adapter's block outputs, each relative to the dense block's mean square,
with SGD (momentum, cosine lr) on the task term, weights frozen. S(t) is linear in the ranks
(up to each layer's rounding), so the constraint terms have an exact rank gradient and are stepped
after the task step without momentum (through momentum S(t) overshot by 10%): the lambda step
u += lr * lambda * N_l/N; then dual ascent, lambda += lambda_lr / (lr * sum_l (N_l/N)^2) * (S* - S(t))
(lambda is a dual variable, docs/methods.md#decisions, starting at ``allocator.lambda``); then the
augmented-Lagrangian (quadratic-penalty) step, which moves the ranks along N_l/N by ``penalty``
times the gap left (1: onto S(t) = S*, within [0, 1]). Both gains are relative to the model's
own layer sizes: no per-model tuning. With penalty = 0 it is plain dual ascent, which oscillates.
The lambda and S(t) traces go into the run record. The mask's step is
crossed by a straight-through estimator and ds_l/dt_l by a density estimate of the layer's
weights at +-t_l. The learned per-layer rates are projected so that sum_l floor(s_l N_l) =
floor(S* N) exactly; the pipeline then masks by magnitude (docs/methods.md#prunable-layers-and-masks). The model is masked
functionally (torch.func.functional_call) and is left untouched.

In rank space every layer gets a usable gradient at step 0, including one the init leaves fully
dense (ERK's stem, downsample and classifier layers); with the sigmoid thresholds of docs/methods.md#allocators such
a layer's gradient was scaled by t (1 - t) ~ 1e-4 and it stayed dense.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Literal

import torch

from ...errors import ConfigError
from ...schemas import knob
from ..selection import num_pruned
from ._fcpts_learning import BlockTaps, learn
from .base import ALLOCATORS, Allocator, AllocatorConfig, build_allocator
from .fcpts_thresholds import FlatLayers

log = logging.getLogger("ptsbench")

LOSSES = ("kl", "mse", "none")
__all__ = ["BlockTaps", "FCPTSAllocator", "FCPTSConfig", "project_counts", "rate_for_count"]


@dataclass(frozen=True)
class FCPTSConfig(AllocatorConfig):
    """FCPTS's knobs (conf/allocator/fcpts_erk.yaml and fcpts_l2norm.yaml pick ``init``)."""

    init: str = knob("erk")  # starting allocation the thresholds reproduce exactly: erk | l2norm
    iters: int = knob(1600, ge=0)  # SGD steps on the calibration set
    batch_size: int = knob(64, ge=1)
    lr: float = knob(0.01, gt=0, le=10)  # cosine-decayed to 0 over iters
    momentum: float = knob(0.9, ge=0, lt=1)
    # initial value of the dual variable of S(t) = S* (docs/methods.md#decisions)
    lambda_: float = knob(1.0, ge=0, le=1e6, key="lambda")
    lambda_lr: float = knob(0.1, ge=0, le=1e3)  # dual ascent: lambda += lambda_lr / (lr sum_l (N_l/N)^2) * (S* - S(t))
    penalty: float = knob(1.0, ge=0, le=1)  # augmented-Lagrangian step: fraction of the gap |S(t) - S*| closed per step
    warmup: float = knob(0.25, ge=0, lt=1)  # fraction of iters before S(t) is held to S*
    temperature: float = knob(4.0, gt=0, le=100)  # KL temperature (loss scaled by T^2)
    loss: str = knob("kl", choices=LOSSES)  # kl | mse (of the adapter's block outputs; also non-logit outputs) | none
    train_weights: bool = knob(False)  # true: also train a copy of the weights (weight_lr); masks stay on the originals
    weight_lr: float = knob(1e-4, gt=0, le=10)
    kde: str = knob("gaussian", choices=("gaussian", "histogram"))  # density of the weights at +-t for ds/dt
    bandwidth: Literal["silverman"] | float = knob("silverman", gt=0, le=1)  # or a float, in units of max |w|
    bins: int = knob(100, ge=1)  # histogram bins over [0, 1] (kde: histogram)
    trace_points: int = knob(100, ge=1)  # loss-trace points kept in the run record
    # calibration images in NHWC layout, so the forward and backward convs run channels-last (faster for
    # depthwise-separable CNNs on CPU, scripts/bench_eval_layout.py); off by default: the same function,
    # other float rounding, so recorded runs keep theirs
    channels_last: bool = knob(False, omit_at_default=True)

    def check(self, path: str) -> None:
        # the init allocation is computed from the weights alone (no calibration context reaches it)
        starts = [n for n in ALLOCATORS.names() if not ALLOCATORS.trait(n, "needs_calibration", False)]
        if self.init not in starts:
            raise ConfigError(
                f"{path}.init='{self.init}' is not a starting allocation; valid choices: {', '.join(starts)}"
            )

    @classmethod
    def option_name(cls, values):
        return f"fcpts_{values.get('init', 'erk')}"


def project_counts(counts: list[int], numels: list[int], target: int) -> list[int]:
    """Rescale pruned counts so they sum to ``target`` with 0 <= k_l <= N_l - 1 where possible.

    The counts are scaled by one factor c (bisection on the floored sum), then the last rounding
    error is handed out one weight at a time to the layers with the largest fractional part.
    """
    caps = [max(n - 1, 0) for n in numels]
    base = counts if sum(counts) > 0 else numels  # nothing pruned: grow like uniform

    def scaled(c):
        return [min(c * b, cap) for b, cap in zip(base, caps)]

    lo, hi = 0.0, 1.0
    while sum(math.floor(v) for v in scaled(hi)) < target and hi < 1e12:
        hi *= 2
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if sum(math.floor(v) for v in scaled(mid)) <= target else (lo, mid)
    vals = scaled(lo)
    out = [math.floor(v) for v in vals]
    order = sorted(range(len(out)), key=lambda i: out[i] - vals[i])  # largest remainder first
    while sum(out) < target and any(out[i] < caps[i] for i in order):
        for i in order:
            if sum(out) < target and out[i] < caps[i]:
                out[i] += 1
    return out


def rate_for_count(k: int, n: int) -> float:
    """The float rate whose floor(rate * n) is exactly k under the pipeline's mask rule."""
    r = k / n
    while num_pruned(r, n) < k:
        r = math.nextafter(r, 1.0)
    while num_pruned(r, n) > k:
        r = math.nextafter(r, 0.0)
    return r


@ALLOCATORS.register("fcpts", config=FCPTSConfig, label="FCPTS ({init})", order=3, needs_calibration=True)
class FCPTSAllocator(Allocator):
    config: FCPTSConfig

    def allocate(self, layers, weights, rate, context=None):
        p = self.config
        if context is None or context.calib_inputs is None:
            raise ConfigError(
                "allocator=fcpts learns from calibration images; run it through the pipeline "
                "(it passes calib.num_samples images) or give an AllocContext with calib_inputs"
            )
        names = [layer.name for layer in layers]
        init_rates = build_allocator(p.init).allocate(layers, weights, rate, None)
        device = context.device
        flat = FlatLayers({n: weights[n] for n in names}, device, p.kde, p.bandwidth, p.bins)
        init_counts = [num_pruned(init_rates[n], k) for n, k in zip(names, flat.numels)]
        rank = (torch.tensor(init_counts, dtype=torch.float64, device=device) / flat.numel_t).requires_grad_()
        init_t = flat.knot_interp(rank)

        t0 = time.perf_counter()
        traces = learn(p, rank, flat, rate, context)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        learn_s = time.perf_counter() - t0

        learned_t = flat.knot_interp(rank.detach())
        learned = flat.pruned_counts(learned_t)
        final = project_counts(learned, flat.numels, num_pruned(rate, sum(flat.numels)))
        total = sum(flat.numels)
        context.report.update(
            {
                "init": p.init,
                "layer_order": names,
                "init_rates": init_rates,
                "iters": p.iters,
                "batch_size": traces["batch_size"],  # the effective one: at most the calibration set
                "task_loss": traces["loss"] if p.iters else None,
                "learn_time_s": round(learn_s, 3),
                "learned_rates": {n: k / m for n, k, m in zip(names, learned, flat.numels)},
                "init_thresholds": dict(zip(names, init_t.tolist())),
                "learned_thresholds": dict(zip(names, learned_t.tolist())),
                "learned_global_rate": sum(learned) / total,
                "init_global_rate": sum(init_counts) / total,
                **self._trace_report(traces, rate),
            }
        )
        log.info(
            "[fcpts] init=%s: learned %d layer thresholds in %.2fs (%d iters); S(t)=%.4f before "
            "projection, target %.4f",
            p.init,
            len(names),
            learn_s,
            p.iters,
            sum(learned) / total,
            rate,
        )
        return {n: rate_for_count(k, m) for n, k, m in zip(names, final, flat.numels)}

    def _trace_report(self, traces: dict, rate: float) -> dict[str, Any]:
        """The record's traces, subsampled to ``trace_points``, and the constraint's error after warm-up."""
        p, s_trace = self.config, traces["sparsity"]
        after = s_trace[int(len(s_trace) * p.warmup) :] if s_trace else []
        return {
            "dual_step": traces["dual_step"],
            "warmup": p.warmup,
            "max_abs_sparsity_error_after_warmup": max((abs(v - rate) for v in after), default=None),
            "trace_iters": _subsample(list(range(len(s_trace))), p.trace_points),
            "sparsity_trace": _subsample(s_trace, p.trace_points),
            "lambda_trace": _subsample(traces["lambda"], p.trace_points),
            "control_loss_trace": _subsample([abs(v - rate) for v in s_trace], p.trace_points),
            "task_loss_trace": _subsample(traces["task"], p.trace_points),
        }


def _subsample(values: list, n: int) -> list:
    if len(values) <= n:
        return list(values)
    step = (len(values) - 1) / (n - 1)
    return [values[round(i * step)] for i in range(n)]
