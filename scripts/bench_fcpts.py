"""Benchmark FCPTS's threshold/mask step: fused (all layers in one flat pass) vs a per-layer loop.

Default (CPU): random weights shaped like the layers of a CIFAR ResNet-56 (57 prunable layers);
times forward + backward of "per-layer threshold -> STE mask + differentiable sparsity" with the
vectorized ``FlatLayers.masks`` against a naive Python loop over layers that builds the same
estimator from autograd ops (hard step + Gaussian-CDF surrogate), checks both give the same
gradients, and prints the ratio.

``--gpu-resnet18`` (also run after the CPU case whenever CUDA is present): the GPU-readiness benchmark of the issue: torchvision ResNet-18 at 224x224
(random weights, BN folded), 1,024 random calibration images, FCPTS(ERK) at 70% for
``--iters`` (default 1,600) steps of batch 64, timed end to end (target: < 2 min on an H100).
"""

from __future__ import annotations

import argparse
import copy
import math
import time

import torch

from ptsbench.sparsity.allocators.fcpts_thresholds import FlatLayers


def naive_masks(theta, mags, bandwidths):
    """The same estimator layer by layer with plain autograd ops (the baseline)."""
    masks, sparsities = [], []
    for th, a, h in zip(theta, mags, bandwidths):
        t = torch.sigmoid(th)
        hard = (a > t).to(torch.float32)
        soft = 0.5 * (1 + torch.erf((a - t) / (h * math.sqrt(2))))  # d soft/dt = -K_h(a - t)
        masks.append(hard + (soft - soft.detach()).float())
        s_hard = 1 - hard.double().mean()
        cdf = 0.5 * (torch.erf((t - a) / (h * math.sqrt(2))) - torch.erf((-t - a) / (h * math.sqrt(2))))
        sparsities.append(s_hard + cdf.mean() - cdf.mean().detach())  # d/dt = reflected KDE at t
    return masks, torch.stack(sparsities)


def bench_cpu(reps: int) -> None:
    torch.set_num_threads(1)
    from ptsbench.models.zoo import ZOO_ARCHS
    from ptsbench.sparsity.layers import prunable_modules

    torch.manual_seed(0)
    model = ZOO_ARCHS.get("cifar_resnet56")(10, 3, 32)
    weights = {n: m.weight.detach() for n, m in prunable_modules(model).items()}
    flat = FlatLayers(weights, torch.device("cpu"))
    mags = [m for m in torch.split(flat.mag, flat.numels)]
    bws = [float(h) for h in flat.bandwidth]
    theta0 = torch.logit(flat.thresholds_for_counts([int(0.7 * n) for n in flat.numels]))
    coef = torch.randn(flat.weight.numel())
    coef_s = torch.randn(len(flat.numels), dtype=torch.float64)

    def fused():
        theta = theta0.clone().requires_grad_()
        keep, s = flat.masks(torch.sigmoid(theta))
        ((keep * coef).sum() + (s * coef_s).sum()).backward()
        return theta.grad

    def naive():
        theta = [th.clone().requires_grad_() for th in theta0]
        masks, s = naive_masks(theta, mags, bws)
        ((torch.cat([m.flatten() for m in masks]) * coef).sum() + (s * coef_s).sum()).backward()
        return torch.stack([th.grad for th in theta])

    g_fused, g_naive = fused(), naive()
    # the fused kernels run in float32 (the baseline in float64): equal to float32 accuracy
    assert torch.allclose(g_fused, g_naive, rtol=1e-3, atol=1e-6), (g_fused - g_naive).abs().max()
    times = {}
    for name, fn in (("fused", fused), ("naive", naive)):
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        times[name] = (time.perf_counter() - t0) / reps
    print(
        f"threshold+mask fwd+bwd, {len(flat.numels)} layers / {flat.weight.numel():,} weights, CPU 1 thread: "
        f"fused {times['fused'] * 1e3:.2f} ms, naive per-layer loop {times['naive'] * 1e3:.2f} ms, "
        f"speed-up x{times['naive'] / times['fused']:.2f} (same gradients)"
    )


def bench_gpu_resnet18(iters: int, device: str) -> None:
    import torchvision

    from ptsbench.sparsity.allocators import AllocContext, build_allocator
    from ptsbench.sparsity.layers import fold_batchnorm, layer_infos, prunable_modules
    from ptsbench.sparsity.selection import num_pruned

    dev = torch.device(device)
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    fold_batchnorm(model)
    model.to(dev)
    modules = prunable_modules(model)
    calib = torch.randn(1024, 3, 224, 224, device=dev)
    ctx = AllocContext(
        model=model, modules=modules, calib_inputs=calib, device=dev, extras={"dense_model": copy.deepcopy(model)}
    )
    weights = {n: m.weight.detach() for n, m in modules.items()}
    t0 = time.perf_counter()
    rates = build_allocator("fcpts", init="erk", iters=iters, batch_size=64).allocate(
        layer_infos(modules), weights, 0.7, ctx
    )
    total = time.perf_counter() - t0
    n = sum(w.numel() for w in weights.values())
    achieved = sum(num_pruned(rates[k], w.numel()) for k, w in weights.items()) / n
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    print(
        f"FCPTS(ERK) ResNet-18 224x224 on {dev} ({name}): {iters} iters x batch 64: "
        f"learning {ctx.report['learn_time_s']:.1f}s, allocate() {total:.1f}s, "
        f"global rate {achieved:.4f}; target < 120 s for 1,600 iters on an H100"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=20, help="timed repetitions of the CPU case")
    ap.add_argument("--gpu-resnet18", action="store_true", help="run the ResNet-18 224x224 FCPTS benchmark")
    ap.add_argument("--iters", type=int, default=1600, help="FCPTS steps for --gpu-resnet18")
    ap.add_argument("--device", default="cuda", help="device for --gpu-resnet18 (cpu works, slowly)")
    args = ap.parse_args()
    if args.gpu_resnet18:
        if args.device.startswith("cuda") and not torch.cuda.is_available():
            raise SystemExit("--gpu-resnet18 needs CUDA here; pass --device cpu --iters 2 for a smoke run")
        bench_gpu_resnet18(args.iters, args.device)
        return
    bench_cpu(args.reps)
    if torch.cuda.is_available():  # `make bench` on a GPU machine measures the target too
        bench_gpu_resnet18(args.iters, "cuda")
    else:
        print("no CUDA device: FCPTS ResNet-18 224x224 benchmark skipped (--gpu-resnet18 --device cpu to smoke-test)")


if __name__ == "__main__":
    main()
