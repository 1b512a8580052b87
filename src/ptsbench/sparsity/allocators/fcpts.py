"""FCPTS allocation (Gong et al., AAAI 2024, "Fast and Controllable Post-training Sparsity"), SPEC §2.

Rule: each layer l gets one learnable scalar theta_l and prunes the weights whose scaled magnitude
|w| / max|w_l| is at or below t_l = sigmoid(theta_l). The thresholds start where they reproduce an
existing allocation exactly (``init: erk | l2norm``) and are learned on the calibration images by
  loss = KL(dense logits || sparse logits at temperature T) * T^2   (or MSE of the outputs; MSE
         also wherever the task's outputs are not (batch, classes) logits: detection, diffusion)
       + lambda * |S(t) - S*|,   S(t) = sum_l N_l s_l(t_l) / sum_l N_l,
with SGD (momentum, cosine lr), weights frozen. The mask's step is crossed by a straight-through
estimator and ds_l/dt_l by a density estimate of the layer's weights at +-t_l (see
``sparsity/threshold_masks.py``). The learned per-layer rates are projected so that
sum_l floor(s_l N_l) = floor(S* N) exactly; the pipeline then masks by magnitude (SPEC §1).
The model is masked functionally (torch.func.functional_call) and is left untouched.

Known property of the sigmoid threshold: dt/dtheta = t (1 - t), so a layer whose init prunes
nothing (ERK's dense stem, downsample and classifier layers) starts with t_l just below its
smallest scaled |w|, gets almost no gradient and stays (nearly) dense; the reference code's
thresholds are sigmoids of the raw weights and behave the same way.
"""
from __future__ import annotations

import copy
import logging
import math
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ...errors import ConfigError
from ..masking import num_pruned
from ..threshold_masks import FlatLayers
from .base import ALLOCATORS, Allocator, build_allocator

log = logging.getLogger("ptsbench")

DEFAULTS = {"init": "erk", "iters": 1600, "batch_size": 64, "lr": 0.01, "momentum": 0.9, "lambda": 1.0,
            "temperature": 4.0, "loss": "kl", "train_weights": False, "weight_lr": 1e-4,
            "kde": "gaussian", "bandwidth": "silverman", "bins": 100, "trace_points": 100}
LOSSES = ("kl", "mse", "none")


class _Forward(nn.Module):
    """Holds the model as a submodule so functional_call can swap its weights for one call."""

    def __init__(self, model, fn):
        super().__init__()
        self.model, self.fn = model, fn

    def forward(self, x):
        return self.fn(self.model, x) if self.fn is not None else self.model(x)


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


@ALLOCATORS.register("fcpts", label="FCPTS ({init})", order=3)
class FCPTSAllocator(Allocator):
    name = "fcpts"
    needs_calibration = True

    def __init__(self, **params):
        super().__init__(**params)
        unknown = set(params) - set(DEFAULTS)
        if unknown:
            raise ConfigError(f"allocator (fcpts): unknown knob(s) {sorted(unknown)}; valid: {sorted(DEFAULTS)}")
        self.p = p = {**DEFAULTS, **params}
        self.loss = p["loss"]  # the task loss in use (kl falls back to mse for non-logit outputs)
        if p["init"] == "fcpts" or p["init"] not in ALLOCATORS:
            raise ConfigError(f"allocator.init='{p['init']}' is not a starting allocation; valid choices: "
                              f"{', '.join(n for n in ALLOCATORS.names() if n != 'fcpts')}")
        if p["loss"] not in LOSSES:
            raise ConfigError(f"allocator.loss='{p['loss']}'; valid choices: {', '.join(LOSSES)}")
        if p["kde"] not in ("gaussian", "histogram"):
            raise ConfigError(f"allocator.kde='{p['kde']}'; valid choices: gaussian, histogram")
        if p["bandwidth"] != "silverman" and not (isinstance(p["bandwidth"], (int, float)) and p["bandwidth"] > 0):
            raise ConfigError(f"allocator.bandwidth={p['bandwidth']!r}; use 'silverman' or a positive float "
                              "(in units of the layer's largest |w|)")
        for knob in ("iters", "batch_size", "bins", "trace_points"):
            low, what = (0, "non-negative") if knob == "iters" else (1, "positive")
            if not isinstance(p[knob], int) or p[knob] < low:
                raise ConfigError(f"allocator.{knob}={p[knob]!r} must be a {what} integer")
        for knob in ("lr", "temperature", "weight_lr"):
            if not p[knob] > 0:
                raise ConfigError(f"allocator.{knob}={p[knob]!r} must be > 0")

    def allocate(self, layers, weights, rate, context=None):
        p = self.p
        if context is None or context.calib_inputs is None:
            raise ConfigError("allocator=fcpts learns from calibration images; run it through the pipeline "
                              "(it passes calib.num_samples images) or give an AllocContext with calib_inputs")
        names = [layer.name for layer in layers]
        init_rates = build_allocator(p["init"]).allocate(layers, weights, rate, None)
        device = context.device
        flat = FlatLayers({n: weights[n] for n in names}, device, p["kde"], p["bandwidth"], p["bins"])
        init_counts = [num_pruned(init_rates[n], k) for n, k in zip(names, flat.numels)]
        init_t = flat.thresholds_for_counts(init_counts)
        theta = torch.logit(init_t).requires_grad_()
        target = num_pruned(rate, sum(flat.numels))

        t0 = time.perf_counter()
        ctrl_trace, task_trace = self.learn(theta, flat, rate, context)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        learn_s = time.perf_counter() - t0

        learned = flat.pruned_counts(torch.sigmoid(theta.detach()))
        final = project_counts(learned, flat.numels, target)
        rates = {n: rate_for_count(k, m) for n, k, m in zip(names, final, flat.numels)}
        total = sum(flat.numels)
        context.report.update({
            "init": p["init"], "layer_order": names, "init_rates": init_rates, "iters": p["iters"],
            "task_loss": self.loss if p["iters"] else None,
            "learn_time_s": round(learn_s, 3),
            "learned_rates": {n: k / m for n, k, m in zip(names, learned, flat.numels)},
            "init_thresholds": dict(zip(names, init_t.tolist())),
            "learned_thresholds": dict(zip(names, torch.sigmoid(theta.detach()).tolist())),
            "learned_global_rate": sum(learned) / total, "init_global_rate": sum(init_counts) / total,
            "trace_iters": _subsample(list(range(len(ctrl_trace))), p["trace_points"]),
            "control_loss_trace": _subsample(ctrl_trace, p["trace_points"]),
            "task_loss_trace": _subsample(task_trace, p["trace_points"]),
        })
        log.info("[fcpts] init=%s: learned %d layer thresholds in %.2fs (%d iters); S(t)=%.4f before "
                 "projection, target %.4f", p["init"], len(names), learn_s, p["iters"], sum(learned) / total, rate)
        return rates

    def learn(self, theta, flat: FlatLayers, rate: float, context) -> tuple[list[float], list[float]]:
        """Optimise theta in place (SGD, cosine lr); returns the control- and task-loss traces."""
        p = self.p
        device, iters, T = context.device, p["iters"], float(p["temperature"])
        model = context.model
        params = list(model.parameters())
        was_training, needs_grad = model.training, [q.requires_grad for q in params]
        model.eval()
        for q in params:
            q.requires_grad_(False)  # no .grad left on the model; only theta learns
        try:
            gen = torch.Generator().manual_seed(int(context.seed))
            calib = context.calib_inputs.to(device)
            batch = min(p["batch_size"], len(calib))
            # batch indices drawn up front: the loop below never syncs with the host
            idx = torch.stack([torch.randperm(len(calib), generator=gen)[:batch] for _ in range(iters)]).to(device) \
                if iters else None
            wrapper = _Forward(model, context.forward)
            teacher = self._teacher_outputs(context, calib, idx) if p["loss"] != "none" and iters else None
            self.loss = p["loss"]
            if teacher is not None and self.loss == "kl" and teacher.dim() != 2:
                # KL needs (batch, classes) logits; detection heads and noise predictions get MSE
                log.info("[fcpts] outputs of shape %s are not (batch, classes) logits: task loss = MSE",
                         tuple(teacher.shape[1:]))
                self.loss = "mse"
            weight = flat.weight.clone().requires_grad_() if p["train_weights"] else flat.weight
            groups = [{"params": [theta], "lr": p["lr"]}]
            if p["train_weights"]:
                groups.append({"params": [weight], "lr": p["weight_lr"]})
            opt = torch.optim.SGD(groups, momentum=p["momentum"])
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(iters, 1))
            keys = [f"model.{n}.weight" for n in flat.names]
            ctrl = torch.zeros(iters, dtype=torch.float64, device=device)
            task = torch.zeros(iters, dtype=torch.float32, device=device)
            for i in range(iters):
                keep, sparsity = flat.masks(torch.sigmoid(theta))
                control = (torch.dot(sparsity, flat.numel_t) / flat.numel_t.sum() - rate).abs()
                loss = p["lambda"] * control
                if teacher is not None:
                    masked = dict(zip(keys, flat.split(weight * keep)))
                    out = functional_call(wrapper, masked, (calib[idx[i]],), strict=False)
                    task_loss = self._task_loss(out, teacher[idx[i]], T)
                    loss = loss + task_loss
                    task[i] = task_loss.detach()
                ctrl[i] = control.detach()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
            return ctrl.tolist(), task.tolist() if teacher is not None else []
        finally:
            for q, g in zip(params, needs_grad):
                q.requires_grad_(g)
            model.train(was_training)

    def _task_loss(self, out, target, T):
        if self.loss == "mse":
            return F.mse_loss(out, target)
        return F.kl_div(F.log_softmax(out / T, 1), F.log_softmax(target / T, 1), log_target=True,
                        reduction="batchmean") * T * T

    @torch.no_grad()
    def _teacher_outputs(self, context, calib, idx):
        """Dense outputs of the calibration images the loop will draw (computed once, not per step)."""
        dense = context.extras.get("dense_model")
        if dense is None:  # the pipeline passes a frozen copy; the unmasked model serves as well
            dense = copy.deepcopy(context.model)
        dense.eval()
        fn = context.forward or (lambda m, x: m(x))
        used = torch.unique(idx)
        outs = torch.cat([fn(dense, calib[part]) for part in used.split(256)])
        teacher = torch.zeros((len(calib), *outs.shape[1:]), dtype=outs.dtype, device=outs.device)
        teacher[used] = outs
        return teacher


def _subsample(values: list, n: int) -> list:
    if len(values) <= n:
        return list(values)
    step = (len(values) - 1) / (n - 1)
    return [values[round(i * step)] for i in range(n)]
