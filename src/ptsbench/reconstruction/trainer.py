"""Optimisation of one unit under fixed masks (docs/methods.md#reconstruction; paper §4 for the SGD recipe).

Minimises ||unit_s(X) - Y||^2 summed over channels and averaged over batch and positions, on
random mini-batches of the cached calibration tensors, updating the weights and biases of the
unit's prunable layers only. After every step the pruned weights are set to zero (``masked_fill``,
not a multiplication by the mask: NaN * 0 is NaN, so a diverging step would leave NaN behind), so
pruned weights stay exactly zero. Presets: ``sgd`` (the paper: momentum 0.9, lr 1e-4) and
``adam`` (the public code: lr 1e-5 for weights, 1e-4 for biases).

Speed: batch indices are drawn for all iterations up front and live on the device; the loop
never reads a value back to the host (the loss trace is a list of device tensors). On CUDA the
whole step (gather, bf16-autocast forward, fp32 loss, backward, optimiser, re-mask) is captured
once as a CUDA graph and replayed; on CPU, or when capture fails, the same step runs eagerly.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from .unit_data import CalibTensor, channel_positions

PRESETS = {
    "sgd": {"lr": 1e-4, "lr_bias": 1e-4, "momentum": 0.9},
    "adam": {"lr": 1e-5, "lr_bias": 1e-4, "momentum": 0.0},
}
WARMUP_STEPS = 3  # eager steps on a side stream before capture (allocates grads and optimiser state)


@dataclass
class TrainSettings:
    iters: int
    batch_size: int
    optimizer: str
    lr: float
    lr_bias: float
    momentum: float
    amp: bool = False  # bf16 autocast of the forward (loss and master weights stay fp32)
    cuda_graphs: bool = False
    seed: int = 0
    trace_points: int = 10  # training-loss samples kept for the record


def batch_indices(n: int, iters: int, batch_size: int, seed: int, device: torch.device) -> torch.Tensor:
    """(iters, batch_size) sample indices, epoch by epoch without replacement, drawn up front."""
    gen = torch.Generator().manual_seed(seed)
    need = iters * batch_size
    perms = [torch.randperm(n, generator=gen) for _ in range(-(-need // n))]
    return torch.cat(perms)[:need].view(iters, batch_size).to(device)


def make_optimizer(
    s: TrainSettings, weights: list[nn.Parameter], biases: list[nn.Parameter], on_cuda: bool
) -> torch.optim.Optimizer:
    groups = [{"params": weights, "lr": s.lr}] + ([{"params": biases, "lr": s.lr_bias}] if biases else [])
    foreach = True if on_cuda else None
    if s.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=s.lr, momentum=s.momentum, foreach=foreach)
    return torch.optim.Adam(groups, lr=s.lr, foreach=foreach, capturable=on_cuda)


@contextlib.contextmanager
def tf32(enabled: bool):
    """TF32 matmuls/convs while training (fp32 targets and reported losses are computed without)."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def train_unit(
    chain: nn.Module,
    weights: list[nn.Parameter],
    masks: list[torch.Tensor],
    biases: list[nn.Parameter],
    x: CalibTensor,
    y: CalibTensor,
    s: TrainSettings,
    device: torch.device,
    progress=None,
) -> dict:
    """Run ``s.iters`` steps; returns the execution path and the sampled training losses."""
    idx_all = batch_indices(len(x), s.iters, s.batch_size, s.seed, x.data.device)
    inv_positions = 1.0 / (s.batch_size * channel_positions(y.sample_shape))
    on_cuda = device.type == "cuda"
    opt = make_optimizer(s, weights, biases, on_cuda)
    # where the weights are pruned, with the weights' strides (channels_last convs)
    pruned = [
        torch.empty_like(w, dtype=torch.bool, requires_grad=False).copy_(~m.bool()) for w, m in zip(weights, masks)
    ]
    trace_every = max(1, s.iters // max(s.trace_points, 1))
    update_every = max(1, s.iters // 200)
    trace: list[tuple[int, torch.Tensor]] = []

    def step(idx: torch.Tensor) -> torch.Tensor:
        xb = x.gather(idx).to(device, non_blocking=True)
        yb = y.gather(idx).to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=s.amp, cache_enabled=False):
            out = chain(xb)
        loss = (out.float() - yb).pow(2).sum() * inv_positions
        loss.backward()
        opt.step()
        with torch.no_grad():
            for w, off in zip(weights, pruned):
                w.masked_fill_(off, 0.0)
        return loss.detach()

    def after(i: int, loss: torch.Tensor) -> None:
        if i % trace_every == 0 or i == s.iters - 1:
            trace.append((i, loss.clone()))
        if progress is not None and (i + 1) % update_every == 0:
            progress.update(update_every)

    use_graph = on_cuda and s.cuda_graphs and x.data.device.type == "cuda" and s.iters > WARMUP_STEPS
    with tf32(on_cuda):
        path = _graph_steps(step, after, opt, idx_all, s.iters, device) if use_graph else None
        if path is None or path.startswith("eager"):
            start = WARMUP_STEPS if path is not None else 0  # a failed capture ran the warm-up steps already
            for i in range(start, s.iters):
                opt.zero_grad(set_to_none=True)
                after(i, step(idx_all[i]))
            path = path or "eager"
    for p in weights + biases:
        p.grad = None  # on CUDA the grads live in the graph's private pool: release it with the graph
    if progress is not None:
        progress.update(s.iters - progress.n)
    return {"path": path, "train_loss_trace": [[i, float(v)] for i, v in trace]}


def _graph_steps(step, after, opt, idx_all: torch.Tensor, iters: int, device: torch.device) -> str:
    """The steps after a short eager warm-up (on a side stream, which allocates grads and optimiser state)
    captured once as a CUDA graph and replayed; "eager (...)" when the capture fails, after the warm-up
    steps, so the caller runs the rest eagerly."""
    static_idx = idx_all[0].clone()
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for i in range(WARMUP_STEPS):
            static_idx.copy_(idx_all[i])
            opt.zero_grad(set_to_none=True)
            after(i, step(static_idx))
    torch.cuda.current_stream(device).wait_stream(side)
    try:
        graph = torch.cuda.CUDAGraph()
        opt.zero_grad(set_to_none=True)
        with torch.cuda.graph(graph):
            static_loss = step(static_idx)
    except Exception as e:  # noqa: BLE001 - an op that cannot be captured: stay eager
        return f"eager (cuda graph capture failed: {type(e).__name__})"
    for i in range(WARMUP_STEPS, iters):
        static_idx.copy_(idx_all[i])
        graph.replay()
        after(i, static_loss)
    return "cuda_graph"
