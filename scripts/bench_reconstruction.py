"""Benchmark the reconstruction engine's training loop against a naive fp32 eager loop.

Both loops train the same units (block granularity, masks at 70%) on the same cached
calibration tensors for the same number of iterations; the script prints ms per iteration for
each and the ratio naive / engine, measured in this run.
- naive: fp32, NCHW, fresh ``torch.randint`` batch per step, per-tensor re-masking, and the
  ``loss.item()`` logging most hand-written loops do (a host sync every step);
- engine: ``ptsbench.reconstruction.trainer.train_unit`` (pre-sampled device indices, no host
  sync; on CUDA bf16 autocast, TF32, channels_last and a CUDA-graph-captured step).
CPU: the zoo ResNet-20 at 28x28. CUDA (when present): torchvision ResNet-18 and ResNet-50 at
224x224 with random weights.

    python scripts/bench_reconstruction.py [--iters 30] [--threads 1]
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from ptsbench.models.adapters import get_adapter  # noqa: E402
from ptsbench.reconstruction.feeder import UnitFeeder  # noqa: E402
from ptsbench.reconstruction.trainer import PRESETS, TrainSettings, train_unit  # noqa: E402
from ptsbench.reconstruction.unit_data import UnitChain, channel_positions  # noqa: E402
from ptsbench.sparsity.layers import fold_batchnorm, prunable_modules  # noqa: E402
from ptsbench.sparsity.selection import apply_masks, magnitude_masks  # noqa: E402


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def naive_loop(chain, weights, masks, biases, x, y, iters, batch_size, device) -> None:
    opt = torch.optim.SGD([{"params": weights}, {"params": biases}], lr=1e-4, momentum=0.9)
    positions = channel_positions(tuple(y.shape[1:]))
    for _ in range(iters):
        idx = torch.randint(0, len(x), (batch_size,))
        xb, yb = x[idx].to(device), y[idx].to(device)
        loss = (chain(xb) - yb).pow(2).sum() / (batch_size * positions)
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            for w, m in zip(weights, masks):
                w.mul_(m)
        _ = loss.item()  # per-step logging


def bench_model(label, model, family, in_shape, n_calib, batch_size, iters, device) -> tuple[float, float]:
    model = model.to(device).eval()
    fold_batchnorm(model)
    dense = copy.deepcopy(model)
    for p in dense.parameters():
        p.requires_grad_(False)
    modules = prunable_modules(model)
    masks = magnitude_masks(modules, dict.fromkeys(modules, 0.7))
    apply_masks(modules, masks)
    units = get_adapter(family).units(model, "block")
    calib = torch.randn(n_calib, *in_shape)
    on_cuda = device.type == "cuda"
    feeder = UnitFeeder(model, dense, units, calib, lambda m, t: m(t), "dense", device, False, 64, on_cuda)
    settings = TrainSettings(
        iters=iters, batch_size=batch_size, optimizer="sgd", **PRESETS["sgd"], amp=on_cuda, cuda_graphs=on_cuda
    )
    t_engine = t_naive = 0.0
    paths: set[str] = set()  # engine execution path per unit (cuda_graph, or why not)
    for unit in units:
        x, y = feeder.tensors(unit)
        layers = [model.get_submodule(n) for n in unit.layers]
        weights = [m.weight for m in layers]
        biases = [m.bias for m in layers if m.bias is not None]
        wmasks = [masks[n].to(w.dtype) for n, w in zip(unit.layers, weights)]
        for p in weights + biases:
            p.requires_grad_(True)
        chain = UnitChain(model, unit.modules)
        # naive: fp32, NCHW, contiguous copies of the same tensors
        x_plain, y_plain = x.chunk(0, len(x)).contiguous(), y.chunk(0, len(y)).contiguous()
        naive_loop(chain, weights, wmasks, biases, x_plain, y_plain, 3, batch_size, device)  # warm-up
        sync(device)
        t = time.perf_counter()
        naive_loop(chain, weights, wmasks, biases, x_plain, y_plain, iters, batch_size, device)
        sync(device)
        t_naive += time.perf_counter() - t
        del x_plain, y_plain
        if on_cuda:
            chain.to(memory_format=torch.channels_last)
        sync(device)
        t = time.perf_counter()
        paths.add(train_unit(chain, weights, [masks[n] for n in unit.layers], biases, x, y, settings, device)["path"])
        sync(device)
        t_engine += time.perf_counter() - t
        chain.to(memory_format=torch.contiguous_format)
        for p in weights + biases:
            p.requires_grad_(False)
    n = iters * len(units)
    ms_naive, ms_engine = 1000 * t_naive / n, 1000 * t_engine / n
    print(
        f"{label:34s} units={len(units):2d} iters/unit={iters:5d} batch={batch_size:3d} | naive fp32 eager "
        f"{ms_naive:8.3f} ms/iter | engine {ms_engine:8.3f} ms/iter | ratio {ms_naive / ms_engine:5.2f}x | "
        f"engine per full sweep-iteration (all units) {ms_engine * len(units):8.2f} ms | "
        f"engine path: {', '.join(sorted(paths))}",
        flush=True,
    )
    return ms_naive, ms_engine


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iters", type=int, default=30, help="iterations per unit on CPU (CUDA: 10x)")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads (1 is the most stable on a shared box)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    from ptsbench.models import zoo

    bench_model(
        "cpu  zoo ResNet-20 28x28",
        zoo.ZOO_ARCHS.get("cifar_resnet20")(10, 1, 28),
        "resnet",
        (1, 28, 28),
        256,
        64,
        args.iters,
        torch.device("cpu"),
    )
    if torch.cuda.is_available():
        import torchvision

        dev = torch.device("cuda")
        print(f"device: {torch.cuda.get_device_name(dev)}")
        for name in ("resnet18", "resnet50"):
            bench_model(
                f"cuda torchvision {name} 224x224",
                getattr(torchvision.models, name)(),
                "resnet",
                (3, 224, 224),
                1024,
                64,
                10 * args.iters,
                dev,
            )  # the issue: 1,024 cached inputs
    else:
        print("no CUDA device: GPU benchmark (ResNet-18/50 at 224x224) skipped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
