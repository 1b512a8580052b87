"""Measured speed of a pruned model: dense kernels vs the best sparse backend per layer (``eval.latency``).

Both models are the pruned one (same zeros, same outputs up to rounding): "dense" runs every layer
with the dense kernel, "sparse" swaps each layer for the backend that ran it fastest. The choice is a
micro-benchmark of each candidate (sparse_layers.candidates) on that layer's real input, cached by
(device, threads, dtype, layer kind, weight shape, stride, input shape, density to 1%) so a shape is
timed once per process (and per cache file). A sparse backend is chosen only when its median beats
dense by MARGIN, so noise does not pick it. End-to-end times are the median of ``repeats`` forwards
after ``warmup`` ones, on a fixed batch; CUDA N:M runs both models in float16, since the 2:4
kernels take half precision only. A sparse model slower than dense is recorded as such
(``speedup`` < 1), never dropped.
"""

from __future__ import annotations

import copy
import json
import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING, cast

import torch
from torch import nn

from ..records.io import write_json_atomic
from .sparse_layers import candidates, make_sparse

if TYPE_CHECKING:
    from ..sparsity.layers import PrunableLayer

MARGIN = 0.95  # a sparse backend must take at most 95% of the dense time to be chosen
_CACHE: dict[str, dict[str, float]] = {}


def median_seconds(fn, device: torch.device, warmup: int, repeats: int) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls after ``warmup`` calls (CUDA synchronised)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def shape_key(module: PrunableLayer, x: torch.Tensor, device: torch.device) -> str:
    w = module.weight
    density = round(float((w != 0).float().mean()), 2)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    stride = list(getattr(module, "stride", (1, 1)))
    return json.dumps(
        [
            name,
            torch.get_num_threads(),
            str(w.dtype),
            type(module).__name__,
            list(w.shape),
            stride,
            list(x.shape),
            density,
        ]
    )


def choose(timings: dict[str, float]) -> str:
    """The backend to run: the fastest sparse one if it takes at most MARGIN of the dense time."""
    best = min((b for b in timings if b != "dense"), key=lambda b: timings[b], default="dense")
    return best if best != "dense" and timings[best] <= MARGIN * timings["dense"] else "dense"


@torch.no_grad()
def plan_backends(
    model, modules: dict[str, PrunableLayer], run, device, nm, warmup: int, repeats: int
) -> tuple[dict, dict]:
    """Per layer: input and weight shapes, density, each candidate's median ms and the chosen backend,
    from one ``run(model)`` during which every layer times its candidates on its own input; and the
    candidates that failed to run (``layer:backend`` -> the error), left out of the choice."""
    plan: dict[str, dict] = {}
    unavailable: dict[str, str] = {}

    def hook(name):
        def bench(mod, args):
            x = args[0]
            key = shape_key(mod, x, device)
            if key not in _CACHE:
                timings = {}
                for backend in candidates(mod, device, nm, mod.weight.dtype):
                    try:
                        layer = make_sparse(mod, backend)
                        # .forward: calling the layer would run this hook again (dense: the layer itself)
                        ms = median_seconds(lambda layer=layer: layer.forward(x), device, warmup, repeats) * 1e3
                    except (RuntimeError, NotImplementedError) as e:  # a kernel this build or device lacks
                        if backend == "dense":
                            raise
                        unavailable[f"{name}:{backend}"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
                        continue
                    timings[backend] = ms
                _CACHE[key] = timings
            timings = _CACHE[key]
            plan.setdefault(
                name,
                {
                    "weight_shape": list(mod.weight.shape),
                    "input_shape": list(x.shape),
                    "density": round(float((mod.weight != 0).float().mean()), 4),
                    "ms": dict(timings),  # unrounded: the choice below is made on these
                    "backend": choose(timings),
                },
            )

        return bench

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in modules.items()]
    try:
        run(model)
    finally:
        for h in handles:
            h.remove()
    return plan, unavailable


def swap_layers(model: nn.Module, backends: dict[str, str]) -> nn.Module:
    """A copy of ``model`` with each layer of ``backends`` replaced by its sparse version."""
    sparse = copy.deepcopy(model)
    for name, backend in backends.items():
        if backend == "dense":
            continue
        parent_name, _, child = name.rpartition(".")
        parent = sparse.get_submodule(parent_name) if parent_name else sparse
        setattr(parent, child, make_sparse(cast("PrunableLayer", sparse.get_submodule(name)), backend))
    return sparse


def load_cache(path: Path | None) -> None:
    if path is not None and path.exists():
        _CACHE.update(json.loads(path.read_text()))


def save_cache(path: Path | None) -> None:
    if path is not None:  # atomic: runs of a parallel sweep share the file
        write_json_atomic(path, _CACHE)


@torch.no_grad()
def measure_latency(
    model: nn.Module,
    modules: dict[str, PrunableLayer],
    inputs: torch.Tensor,
    forward,
    device: torch.device,
    nm: tuple[int, int] | None = None,
    warmup: int = 3,
    repeats: int = 20,
    cache_path: Path | None = None,
) -> dict:
    """A record's ``latency``: dense vs sparse end-to-end medians of ``forward(model, inputs)``, the
    backend and micro-benchmark of each prunable layer, and what they ran on."""
    if len(inputs) == 0:
        raise ValueError(
            "eval.latency: no model inputs to time with (a diffusion run captures them only with calibration)"
        )
    device = torch.device(device)
    dtype = torch.float16 if device.type == "cuda" and nm == (2, 4) else torch.float32
    names = list(modules)
    dense = copy.deepcopy(model).to(device=device, dtype=dtype).eval()
    layers = {n: cast("PrunableLayer", dense.get_submodule(n)) for n in names}
    x = inputs.to(device=device, dtype=dtype)
    load_cache(cache_path)
    plan, unavailable = plan_backends(
        dense, layers, lambda m: forward(m, x), device, nm, max(1, warmup // 2), max(3, repeats // 2)
    )
    save_cache(cache_path)
    sparse = swap_layers(dense, {n: p["backend"] for n, p in plan.items()})
    t_dense = median_seconds(lambda: forward(dense, x), device, warmup, repeats) * 1e3
    t_sparse = median_seconds(lambda: forward(sparse, x), device, warmup, repeats) * 1e3
    counts: dict[str, int] = {}
    for p in plan.values():
        counts[p["backend"]] = counts.get(p["backend"], 0) + 1
    return {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "threads": torch.get_num_threads(),
        "dtype": str(dtype).replace("torch.", ""),
        "batch_size": int(inputs.shape[0]),
        "warmup": warmup,
        "repeats": repeats,
        "dense_ms": t_dense,
        "sparse_ms": t_sparse,
        "speedup": t_dense / t_sparse,
        "backends": counts,
        "layers": plan,
        "unavailable": unavailable,
    }
