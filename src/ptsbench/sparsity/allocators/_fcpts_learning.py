"""FCPTS's optimisation of the per-layer ranks (the loop of ``fcpts.FCPTSAllocator``; the rule is in
that module's docstring).

Each step: thresholds from the ranks, masks with the straight-through estimator, the task loss on a
calibration batch (KL of logits at temperature T, or the MSE of the adapter's block outputs) and its
SGD step; then the constraint steps on the ranks without momentum (the Lagrangian term, dual ascent
on lambda, the penalty's step). Batch indices are drawn up front and the traces stay on the device,
so the loop never waits for the host.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from tqdm.auto import tqdm

from .fcpts_thresholds import FlatLayers

log = logging.getLogger("ptsbench")


class _Forward(nn.Module):
    """Holds the model as a submodule so functional_call can swap its weights for one call."""

    def __init__(self, model, fn):
        super().__init__()
        self.model, self.fn = model, fn

    def forward(self, x):
        return self.fn(self.model, x) if self.fn is not None else self.model(x)


@dataclass
class Objective:
    """The task term of one FCPTS run: which loss, on what (final outputs or block taps)."""

    loss: str  # kl | mse | none (the loss in use: kl falls back to mse for non-logit outputs)
    wrapper: _Forward
    teacher: torch.Tensor | None = None  # dense outputs per calibration sample (final-output losses)
    taps: BlockTaps | None = None  # block outputs (mse with an adapter that lists blocks)

    @property
    def active(self) -> bool:
        return self.taps is not None or self.teacher is not None

    def value(self, masked: dict, x: torch.Tensor, idx: torch.Tensor, temperature: float) -> torch.Tensor:
        if self.taps is not None:
            wrapper, taps = self.wrapper, self.taps
            return taps.loss(
                lambda: functional_call(wrapper, masked, (x,), strict=False),
                lambda: wrapper.fn(taps.dense, x) if wrapper.fn else taps.dense(x),
            )
        out = functional_call(self.wrapper, masked, (x,), strict=False)
        assert self.teacher is not None
        return task_loss(self.loss, out, self.teacher[idx], temperature)

    def close(self) -> None:
        if self.taps is not None:
            self.taps.close()


def task_loss(loss: str, out: torch.Tensor, target: torch.Tensor, temperature: float) -> torch.Tensor:
    if loss == "mse":
        return F.mse_loss(out, target)
    t = temperature
    return (
        F.kl_div(F.log_softmax(out / t, 1), F.log_softmax(target / t, 1), log_target=True, reduction="batchmean")
        * t
        * t
    )


def dense_model_of(context) -> nn.Module:
    dense = context.extras.get("dense_model")
    if dense is None:  # the pipeline passes a frozen copy; the unmasked model serves as well
        dense = copy.deepcopy(context.model)
    return dense.eval()


@torch.no_grad()
def teacher_outputs(context, calib: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Dense outputs of the calibration images the loop will draw (computed once, not per step)."""
    dense = dense_model_of(context)
    fn = context.forward or (lambda m, x: m(x))
    used = torch.unique(idx)
    outs = torch.cat([fn(dense, calib[part]) for part in used.split(256)])
    teacher = torch.zeros((len(calib), *outs.shape[1:]), dtype=outs.dtype, device=outs.device)
    teacher[used] = outs
    return teacher


def build_objective(loss: str, context, calib: torch.Tensor, idx: torch.Tensor | None) -> Objective:
    """The task term: ``loss`` on the final outputs, or on the adapter's blocks when the outputs are no
    (batch, classes) logits (detection heads, noise predictions) or ``loss`` is mse."""
    wrapper = _Forward(context.model, context.forward)
    if loss == "none" or idx is None:
        return Objective(loss, wrapper)
    teacher = teacher_outputs(context, calib, idx)
    if loss == "kl" and teacher.dim() != 2:
        log.info(
            "[fcpts] outputs of shape %s are not (batch, classes) logits: task loss = block-output MSE",
            tuple(teacher.shape[1:]),
        )
        loss = "mse"
    if loss == "mse":
        taps = BlockTaps(context.model, dense_model_of(context), context.extras.get("adapter"))
        if taps.names:
            return Objective(loss, wrapper, taps=taps)
        taps.close()  # no block units known: MSE of the final outputs
    return Objective(loss, wrapper, teacher=teacher)


@contextmanager
def frozen(model: nn.Module) -> Iterator[None]:
    """The model in eval mode with no parameter requiring grad (only the ranks learn), restored after."""
    params = list(model.parameters())
    was_training, needs_grad = model.training, [q.requires_grad for q in params]
    model.eval()
    for q in params:
        q.requires_grad_(False)
    try:
        yield
    finally:
        for q, g in zip(params, needs_grad):
            q.requires_grad_(g)
        model.train(was_training)


def batch_indices(n: int, iters: int, batch: int, seed: int, device) -> torch.Tensor | None:
    """(iters, batch) calibration indices drawn up front: the loop never syncs with the host."""
    if not iters:
        return None
    gen = torch.Generator().manual_seed(int(seed))
    return torch.stack([torch.randperm(n, generator=gen)[:batch] for _ in range(iters)]).to(device)


def learn(p, rank: torch.Tensor, flat: FlatLayers, rate: float, context) -> dict:
    """Optimise the per-layer ranks in place (SGD, cosine lr) with a dual-ascent lambda (``p``: the
    FCPTS config); returns the per-step traces {'sparsity': S(t), 'lambda', 'task'}, the dual step
    and the task loss used."""
    device, iters = context.device, p.iters
    share = flat.numel_t / flat.numel_t.sum()
    dual_step = float(p.lambda_lr) / (float(p.lr) * float((share**2).sum()))  # gap -> lambda, in lr steps
    with frozen(context.model):
        calib = context.calib_inputs.to(device)
        if p.channels_last and calib.dim() == 4:
            calib = calib.contiguous(memory_format=torch.channels_last)
        batch = min(p.batch_size, len(calib))  # a batch beyond the calibration set would repeat samples
        idx = batch_indices(len(calib), iters, batch, context.seed, device)
        objective = build_objective(p.loss, context, calib, idx)
        try:
            weight = flat.weight.clone().requires_grad_() if p.train_weights else flat.weight
            groups = [{"params": [rank], "lr": p.lr}]
            if p.train_weights:
                groups.append({"params": [weight], "lr": p.weight_lr})
            opt = torch.optim.SGD(groups, momentum=p.momentum)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(iters, 1))
            lam = torch.tensor(float(p.lambda_), dtype=torch.float64, device=device)
            traces = {k: torch.zeros(iters, dtype=torch.float64, device=device) for k in ("sparsity", "lambda")}
            task = torch.zeros(iters, dtype=torch.float32, device=device)
            keys = [f"model.{n}.weight" for n in flat.names]
            # a bar with ETA like reconstruction's; off when stderr is no terminal (logs, joblib workers)
            for i in tqdm(range(iters), desc="fcpts", unit="it", leave=False, mininterval=1.0, disable=None):
                keep, sparsity = flat.masks(flat.thresholds_at(rank))
                traces["sparsity"][i] = (torch.dot(sparsity, flat.numel_t) / flat.numel_t.sum()).detach()
                traces["lambda"][i] = lam
                if objective.active:
                    assert idx is not None  # drawn whenever iters > 0
                    masked = dict(zip(keys, flat.split(weight * keep)))
                    loss = objective.value(masked, calib[idx[i]], idx[i], float(p.temperature))
                    task[i] = loss.detach()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                lr_now = opt.param_groups[0]["lr"]
                sched.step()
                constraint_steps(rank, share, lam, lr_now, rate, dual_step, float(p.penalty))
        finally:
            objective.close()
    return {
        "sparsity": traces["sparsity"].tolist(),
        "lambda": traces["lambda"].tolist(),
        "task": task.tolist() if objective.active else [],
        "dual_step": dual_step,
        "loss": objective.loss,
        "batch_size": batch,
    }


@torch.no_grad()
def constraint_steps(rank, share, lam, lr_now: float, rate: float, dual_step: float, penalty: float) -> None:
    """The Lagrangian term lam (S* - S) has the exact rank gradient -lam N_l/N (S is linear in the ranks
    up to each layer's rounding): stepped without momentum, which made S(t) overshoot; then dual ascent
    on the gap left (``lam`` in place), then the penalty's step, which moves the ranks along N_l/N by
    ``penalty`` times that gap (1: onto S = S*)."""
    rank.clamp_(0.0, 1.0).add_(share * (lr_now * lam)).clamp_(0.0, 1.0)
    gap = rate - torch.dot(share, rank)
    lam += dual_step * gap
    penalty_step(rank, share, penalty * gap)


def penalty_step(rank: torch.Tensor, share: torch.Tensor, gap: torch.Tensor, passes: int = 4) -> None:
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
