"""FCPTS allocation (Gong et al., AAAI 2024, "Fast and Controllable Post-training Sparsity"), docs/methods.md#allocators.

Rule: each layer l prunes the weights whose scaled magnitude |w| / max|w_l| is at or below a
threshold t_l. The learned parameter is the layer's rank u_l (the fraction of its weights below
t_l; ``sparsity/threshold_masks.py``), started where it reproduces an existing allocation
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

import copy
import logging
import math
import time
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from tqdm.auto import tqdm

from ...errors import ConfigError
from ...schemas import knob
from ..masking import num_pruned
from ..threshold_masks import FlatLayers
from .base import ALLOCATORS, Allocator, AllocatorConfig, build_allocator

log = logging.getLogger("ptsbench")

LOSSES = ("kl", "mse", "none")


@dataclass
class FCPTSConfig(AllocatorConfig):
    """FCPTS's knobs (conf/allocator/fcpts_erk.yaml and fcpts_l2norm.yaml pick ``init``)."""

    name: str = knob("fcpts")
    init: str = knob("erk")  # starting allocation the thresholds reproduce exactly: erk | l2norm
    iters: int = knob(1600, ge=0)  # SGD steps on the calibration set
    batch_size: int = knob(64, ge=1)
    lr: float = knob(0.01, gt=0)  # cosine-decayed to 0 over iters
    momentum: float = knob(0.9, ge=0)
    lambda_: float = knob(
        1.0, ge=0, key="lambda"
    )  # initial value of the dual variable of S(t) = S* (docs/methods.md#decisions)
    lambda_lr: float = knob(0.1, ge=0)  # dual ascent: lambda += lambda_lr / (lr sum_l (N_l/N)^2) * (S* - S(t))
    penalty: float = knob(1.0, ge=0)  # augmented-Lagrangian step: fraction of the gap |S(t) - S*| closed per step
    warmup: float = knob(0.25, ge=0, lt=1)  # fraction of iters before S(t) is held to S*
    temperature: float = knob(4.0, gt=0)  # KL temperature (loss scaled by T^2)
    loss: str = knob("kl", choices=LOSSES)  # kl | mse (of the adapter's block outputs; also non-logit outputs) | none
    train_weights: bool = knob(False)  # true: also train a copy of the weights (weight_lr); masks stay on the originals
    weight_lr: float = knob(1e-4, gt=0)
    kde: str = knob("gaussian", choices=("gaussian", "histogram"))  # density of the weights at +-t for ds/dt
    bandwidth: Literal["silverman"] | float = knob("silverman", gt=0)  # or a float, in units of max |w|
    bins: int = knob(100, ge=1)  # histogram bins over [0, 1] (kde: histogram)
    trace_points: int = knob(100, ge=1)  # loss-trace points kept in the run record

    @classmethod
    def check(cls, node, path):
        if node.init == "fcpts" or node.init not in ALLOCATORS:
            raise ConfigError(
                f"{path}.init='{node.init}' is not a starting allocation; valid choices: "
                f"{', '.join(n for n in ALLOCATORS.names() if n != 'fcpts')}"
            )

    @classmethod
    def option_name(cls, node):
        return f"fcpts_{node.get('init', 'erk')}"


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
    config = FCPTSConfig

    def __init__(self, **params):
        super().__init__(**params)
        self.p = p = self.params
        self.loss = p["loss"]  # the task loss in use (kl falls back to mse for non-logit outputs)

    def allocate(self, layers, weights, rate, context=None):
        p = self.p
        if context is None or context.calib_inputs is None:
            raise ConfigError(
                "allocator=fcpts learns from calibration images; run it through the pipeline "
                "(it passes calib.num_samples images) or give an AllocContext with calib_inputs"
            )
        names = [layer.name for layer in layers]
        init_rates = build_allocator(p["init"]).allocate(layers, weights, rate, None)
        device = context.device
        flat = FlatLayers({n: weights[n] for n in names}, device, p["kde"], p["bandwidth"], p["bins"])
        init_counts = [num_pruned(init_rates[n], k) for n, k in zip(names, flat.numels)]
        rank = (torch.tensor(init_counts, dtype=torch.float64, device=device) / flat.numel_t).requires_grad_()
        init_t = flat.knot_interp(rank)
        target = num_pruned(rate, sum(flat.numels))

        t0 = time.perf_counter()
        traces = self.learn(rank, flat, rate, context)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        learn_s = time.perf_counter() - t0

        learned_t = flat.knot_interp(rank.detach())
        learned = flat.pruned_counts(learned_t)
        final = project_counts(learned, flat.numels, target)
        rates = {n: rate_for_count(k, m) for n, k, m in zip(names, final, flat.numels)}
        total = sum(flat.numels)
        s_trace = traces["sparsity"]
        after = s_trace[int(len(s_trace) * p["warmup"]) :] if s_trace else []
        context.report.update(
            {
                "init": p["init"],
                "layer_order": names,
                "init_rates": init_rates,
                "iters": p["iters"],
                "task_loss": self.loss if p["iters"] else None,
                "learn_time_s": round(learn_s, 3),
                "learned_rates": {n: k / m for n, k, m in zip(names, learned, flat.numels)},
                "init_thresholds": dict(zip(names, init_t.tolist())),
                "learned_thresholds": dict(zip(names, learned_t.tolist())),
                "learned_global_rate": sum(learned) / total,
                "init_global_rate": sum(init_counts) / total,
                "dual_step": traces["dual_step"],
                "warmup": p["warmup"],
                "max_abs_sparsity_error_after_warmup": max((abs(v - rate) for v in after), default=None),
                "trace_iters": _subsample(list(range(len(s_trace))), p["trace_points"]),
                "sparsity_trace": _subsample(s_trace, p["trace_points"]),
                "lambda_trace": _subsample(traces["lambda"], p["trace_points"]),
                "control_loss_trace": _subsample([abs(v - rate) for v in s_trace], p["trace_points"]),
                "task_loss_trace": _subsample(traces["task"], p["trace_points"]),
            }
        )
        log.info(
            "[fcpts] init=%s: learned %d layer thresholds in %.2fs (%d iters); S(t)=%.4f before "
            "projection, target %.4f",
            p["init"],
            len(names),
            learn_s,
            p["iters"],
            sum(learned) / total,
            rate,
        )
        return rates

    def learn(self, rank, flat: FlatLayers, rate: float, context) -> dict:
        """Optimise the per-layer ranks in place (SGD, cosine lr) with a dual-ascent lambda; returns the
        per-step traces {'sparsity': S(t), 'lambda', 'task'} and rho."""
        p = self.p
        device, iters, T = context.device, p["iters"], float(p["temperature"])
        model = context.model
        params = list(model.parameters())
        was_training, needs_grad = model.training, [q.requires_grad for q in params]
        model.eval()
        for q in params:
            q.requires_grad_(False)  # no .grad left on the model; only the ranks learn
        share = flat.numel_t / flat.numel_t.sum()
        share_sq = float((share**2).sum())
        dual_step = float(p["lambda_lr"]) / (float(p["lr"]) * share_sq)  # gap -> lambda, in units of one lr step
        taps = None
        try:
            gen = torch.Generator().manual_seed(int(context.seed))
            calib = context.calib_inputs.to(device)
            batch = min(p["batch_size"], len(calib))
            # batch indices drawn up front: the loop below never syncs with the host
            idx = (
                torch.stack([torch.randperm(len(calib), generator=gen)[:batch] for _ in range(iters)]).to(device)
                if iters
                else None
            )
            wrapper = _Forward(model, context.forward)
            teacher = self._teacher_outputs(context, calib, idx) if p["loss"] != "none" and iters else None
            self.loss = p["loss"]
            if teacher is not None and self.loss == "kl" and teacher.dim() != 2:
                # KL needs (batch, classes) logits; detection heads and noise predictions get block MSE
                log.info(
                    "[fcpts] outputs of shape %s are not (batch, classes) logits: task loss = block-output MSE",
                    tuple(teacher.shape[1:]),
                )
                self.loss = "mse"
            if teacher is not None and self.loss == "mse":
                taps = BlockTaps(model, self._dense(context), context.extras.get("adapter"))
                if taps.names:
                    teacher = None
                else:  # no block units known: MSE of the final outputs
                    taps.close()
                    taps = None
            weight = flat.weight.clone().requires_grad_() if p["train_weights"] else flat.weight
            groups = [{"params": [rank], "lr": p["lr"]}]
            if p["train_weights"]:
                groups.append({"params": [weight], "lr": p["weight_lr"]})
            opt = torch.optim.SGD(groups, momentum=p["momentum"])
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(iters, 1))
            keys = [f"model.{n}.weight" for n in flat.names]
            lam = torch.tensor(float(p["lambda"]), dtype=torch.float64, device=device)
            s_trace = torch.zeros(iters, dtype=torch.float64, device=device)
            l_trace = torch.zeros(iters, dtype=torch.float64, device=device)
            task = torch.zeros(iters, dtype=torch.float32, device=device)
            has_task = taps is not None or teacher is not None
            # a bar with ETA like reconstruction's; off when stderr is no terminal (logs, joblib workers)
            for i in tqdm(range(iters), desc="fcpts", unit="it", leave=False, mininterval=1.0, disable=None):
                keep, sparsity = flat.masks(flat.thresholds_at(rank))
                s_now = torch.dot(sparsity, flat.numel_t) / flat.numel_t.sum()
                s_trace[i], l_trace[i] = s_now.detach(), lam
                if has_task:
                    masked = dict(zip(keys, flat.split(weight * keep)))
                    x = calib[idx[i]]
                    if taps is not None:
                        task_loss = taps.loss(
                            lambda masked=masked, x=x: functional_call(wrapper, masked, (x,), strict=False),
                            lambda x=x: wrapper.fn(taps.dense, x) if wrapper.fn else taps.dense(x),
                        )
                    else:
                        out = functional_call(wrapper, masked, (x,), strict=False)
                        task_loss = self._task_loss(out, teacher[idx[i]], T)
                    task[i] = task_loss.detach()
                    opt.zero_grad(set_to_none=True)
                    task_loss.backward()
                    opt.step()
                lr_now = opt.param_groups[0]["lr"]
                sched.step()
                with torch.no_grad():
                    # the Lagrangian term lam (S* - S) has the exact rank gradient -lam N_l/N (S is linear
                    # in the ranks up to each layer's rounding): stepped without momentum, which made S(t)
                    # overshoot; then dual ascent on the gap left, then the penalty's step, which moves
                    # the ranks along N_l/N by `penalty` times that gap (1: onto S = S*)
                    rank.clamp_(0.0, 1.0).add_(share * (lr_now * lam)).clamp_(0.0, 1.0)
                    gap = rate - torch.dot(share, rank)
                    lam += dual_step * gap
                    _penalty_step(rank, share, float(p["penalty"]) * gap)
            return {
                "sparsity": s_trace.tolist(),
                "lambda": l_trace.tolist(),
                "task": task.tolist() if has_task else [],
                "dual_step": dual_step,
            }
        finally:
            if taps is not None:
                taps.close()
            for q, g in zip(params, needs_grad):
                q.requires_grad_(g)
            model.train(was_training)

    @staticmethod
    def _dense(context):
        dense = context.extras.get("dense_model")
        if dense is None:  # the pipeline passes a frozen copy; the unmasked model serves as well
            dense = copy.deepcopy(context.model)
        return dense.eval()

    def _task_loss(self, out, target, T):
        if self.loss == "mse":
            return F.mse_loss(out, target)
        return (
            F.kl_div(F.log_softmax(out / T, 1), F.log_softmax(target / T, 1), log_target=True, reduction="batchmean")
            * T
            * T
        )

    @torch.no_grad()
    def _teacher_outputs(self, context, calib, idx):
        """Dense outputs of the calibration images the loop will draw (computed once, not per step)."""
        dense = self._dense(context)
        fn = context.forward or (lambda m, x: m(x))
        used = torch.unique(idx)
        outs = torch.cat([fn(dense, calib[part]) for part in used.split(256)])
        teacher = torch.zeros((len(calib), *outs.shape[1:]), dtype=outs.dtype, device=outs.device)
        teacher[used] = outs
        return teacher


def _penalty_step(rank: torch.Tensor, share: torch.Tensor, gap: torch.Tensor, passes: int = 4) -> None:
    """Move the ranks along N_l/N so that sum_l share_l rank_l gains ``gap``, within [0, 1]: layers
    that hit a bound drop out and the rest take their part (a few fixed passes: no host sync)."""
    goal = torch.dot(share, rank) + gap
    for _ in range(passes):
        rest = goal - torch.dot(share, rank)
        free = torch.where(rest >= 0, rank < 1.0, rank > 0.0).to(share.dtype) * share
        rank.add_(free * (rest / (free * free).sum().clamp_min(1e-30))).clamp_(0.0, 1.0)


class BlockTaps:
    """The outputs of the model adapter's block units (docs/methods.md#allocators: FCPTS's MSE is on block outputs).

    Forward hooks on the block modules of the sparse model and of the dense copy record their
    outputs; the loss is the mean over blocks of MSE(sparse, dense) / mean(dense^2), so that
    every block counts alike whatever its activation scale. Without an adapter, or one with no
    block units (the generic fallback), ``names`` is empty and the caller uses the final outputs.
    """

    def __init__(self, model: nn.Module, dense: nn.Module, adapter):
        self.dense = dense
        self.names: list[str] = []
        if adapter is not None:
            try:
                self.names = [
                    u.modules[0] for u in adapter.units(model, "block") if u.kind == "block" and len(u.modules) == 1
                ]
            except Exception as e:  # noqa: BLE001 - an adapter that cannot list blocks: final outputs
                log.info("[fcpts] no block units (%s): MSE on the final outputs", e)
        self.sparse_out: dict[str, torch.Tensor] = {}
        self.dense_out: dict[str, torch.Tensor] = {}
        self.handles = [
            m.get_submodule(n).register_forward_hook(self._hook(store, n))
            for m, store in ((model, self.sparse_out), (dense, self.dense_out))
            for n in self.names
        ]

    @staticmethod
    def _hook(store, name):
        def hook(_module, _inputs, output):
            if torch.is_tensor(output):
                store[name] = output

        return hook

    def loss(self, run_sparse, run_dense) -> torch.Tensor:
        self.sparse_out.clear()
        self.dense_out.clear()
        with torch.no_grad():
            run_dense()
        run_sparse()
        terms = [
            F.mse_loss(self.sparse_out[n], d) / d.pow(2).mean().clamp_min(1e-12)
            for n, d in self.dense_out.items()
            if n in self.sparse_out
        ]
        return torch.stack(terms).mean()

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def _subsample(values: list, n: int) -> list:
    if len(values) <= n:
        return list(values)
    step = (len(values) - 1) / (n - 1)
    return [values[round(i * step)] for i in range(n)]
