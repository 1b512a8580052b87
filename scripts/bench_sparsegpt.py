"""Benchmark SparseGPT against block reconstruction, and 2:4 layers against dense ones.

1. SparseGPT vs block reconstruction on torchvision ResNet-18 (random weights, BN folded) at
   224x224, magnitude masks at uniform 70% first: wall time of ``reconstruction=sparsegpt``
   (all 21 layers, ms per layer) and of ``reconstruction=block`` on the same model and images.
   Block reconstruction is timed for a few iterations per unit; its cost at the demo's 40 and the
   paper's 20,000 iterations is extrapolated from the measured per-iteration time plus the
   measured fixed cost (capturing inputs/targets, losses), and printed as such. The ratio line
   is block / SparseGPT, both measured in this run. Also SparseGPT with ``target=dense`` (one extra
   dense forward and cross-Gram per layer). CPU always, CUDA too when present, 128 images each
   (the issue's count; SparseGPT ~32 s on an idle 2-core box).
2. SparseGPT's Hessian H = X X^T of each stride-1 3x3 conv shape of ResNet-18 at 224x224: the
   per-lag path (sparsity/conv_gram.py, what SparseGPT runs) against the im2col GEMM it replaced
   (the naive baseline), same inputs, same run; ratio and max relative difference.
3. CUDA only: y = x W^T through ``torch.sparse.to_sparse_semi_structured`` (a 2:4 weight, fp16)
   vs the dense fp16 GEMM, per layer shape of a ViT-B/16 (MLP 768->3072, 3072->768; attention
   qkv 768->2304 and proj 768->768) at 197 tokens x 64 images; prints "skipped: no CUDA" elsewhere.

    python scripts/bench_sparsegpt.py [--cpu-images 128] [--block-iters 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from ptsbench.models.adapters import get_adapter  # noqa: E402
from ptsbench.reconstruction import RECONSTRUCTORS  # noqa: E402
from ptsbench.reconstruction.sparsegpt import SparseGPTConfig  # noqa: E402
from ptsbench.reconstruction.unitwise import UnitwiseConfig  # noqa: E402
from ptsbench.sparsity.layers import fold_batchnorm, prunable_modules  # noqa: E402
from ptsbench.sparsity.selection import (  # noqa: E402
    apply_masks,
    magnitude_masks,
    nm_keep_mask,  # noqa: E402
)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _pruned_resnet18(device):
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18().to(device).eval()
    fold_batchnorm(model)
    dense = copy.deepcopy(model).requires_grad_(False)
    modules = prunable_modules(model)
    masks = magnitude_masks(modules, dict.fromkeys(modules, 0.7))
    apply_masks(modules, masks)
    return model, dense, masks


def _timed(fn, device):
    sync(device)
    t = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t


def bench_recon(device: torch.device, n_images: int, block_iters: int) -> None:
    calib = torch.randn(n_images, 3, 224, 224)
    adapter = get_adapter("resnet")
    model, dense, masks = _pruned_resnet18(device)
    sgpt_cfg = SparseGPTConfig(name="sparsegpt", blocksize=128, percdamp=0.01, chunk_size=32, offload=False)
    rep, t_sgpt = _timed(
        lambda: RECONSTRUCTORS.get("sparsegpt")(model, dense, masks, calib, sgpt_cfg, device, adapter=adapter), device
    )
    layers = rep["layers"]
    obs_ms = 1000 * sum(e["seconds"] for e in layers) / len(layers)
    gain = sum(e["error_before"] for e in layers) / max(sum(e["error_after"] for e in layers), 1e-12)
    print(
        f"{device.type:4s} resnet18 224x224 {n_images} images | SparseGPT: {t_sgpt:7.1f} s total, "
        f"{1000 * t_sgpt / len(layers):7.1f} ms per layer ({len(layers)} layers; OBS solve alone {obs_ms:.1f} ms "
        f"per layer, the rest is forwards and H = X X^T) | layer output error / {gain:.1f} vs magnitude",
        flush=True,
    )
    model, dense, masks = _pruned_resnet18(device)
    dense_cfg = dataclasses.replace(sgpt_cfg, target="dense")
    _, t_dense = _timed(
        lambda: RECONSTRUCTORS.get("sparsegpt")(model, dense, masks, calib, dense_cfg, device, adapter=adapter), device
    )
    print(
        f"{device.type:4s} SparseGPT target=dense: {t_dense:7.1f} s total, {1000 * t_dense / len(layers):7.1f} ms "
        f"per layer = {t_dense / t_sgpt:.2f}x the reference (one more dense forward and C = X_d X_s^T per layer)",
        flush=True,
    )

    model, dense, masks = _pruned_resnet18(device)
    block_cfg = UnitwiseConfig(
        name="block",
        iters=block_iters,
        batch_size=64,
        input="sparse",
        optimizer="sgd",
        progress=False,
        chunk_size=32,
        offload=False,
    )
    rep, t_block = _timed(
        lambda: RECONSTRUCTORS.get("block")(model, dense, masks, calib, block_cfg, device, adapter=adapter), device
    )
    per_iter = sum(u.get("ms_per_iter", 0.0) for u in rep["units"]) / 1000  # one iteration of every unit, s
    fixed = t_block - per_iter * block_iters
    print(
        f"{device.type:4s} block reconstruction: {t_block:7.1f} s for {block_iters} iters/unit "
        f"({len(rep['units'])} units, {1000 * per_iter:.0f} ms per iteration of all units, {fixed:.1f} s fixed)",
        flush=True,
    )
    for iters in (40, 20000):
        est = fixed + per_iter * iters
        print(
            f"{device.type:4s} ratio block({iters} iters/unit, extrapolated {est:9.1f} s) / SparseGPT "
            f"({t_sgpt:.1f} s measured) = {est / t_sgpt:8.1f}x | {1000 * est / len(layers):9.1f} ms per layer",
            flush=True,
        )


def bench_hessian(device: torch.device, n_images: int) -> None:
    from ptsbench.sparsity.conv_gram import lag_gram
    from ptsbench.sparsity.gemm import input_slices

    def im2col_gram(conv, x):
        return sum(torch.bmm(s.transpose(1, 2), s) for s in input_slices(conv, x))

    for channels, size in ((64, 56), (128, 28), (256, 14), (512, 7)):
        conv = torch.nn.Conv2d(channels, channels, 3, padding=1, bias=False).to(device)
        x = torch.randn(n_images, channels, size, size, device=device)
        ref, t_ref = _timed(lambda conv=conv, x=x: im2col_gram(conv, x), device)
        _, t_ref = _timed(lambda conv=conv, x=x: im2col_gram(conv, x), device)  # warm
        got, t_lag = _timed(lambda conv=conv, x=x: lag_gram(conv, x), device)
        _, t_lag = _timed(lambda conv=conv, x=x: lag_gram(conv, x), device)
        rel = ((got - ref).abs().max() / ref.abs().max()).item()
        print(
            f"{device.type:4s} Hessian 3x3 conv {channels}ch {size}x{size} x{n_images} | im2col {1000 * t_ref:8.1f} ms | "
            f"per-lag {1000 * t_lag:8.1f} ms | {t_ref / t_lag:5.2f}x | max rel diff {rel:.1e}",
            flush=True,
        )


def bench_semi_structured(tokens: int = 197 * 64) -> None:
    from torch.sparse import to_sparse_semi_structured

    dev = torch.device("cuda")
    shapes = {
        "mlp.fc1 768->3072": (3072, 768),
        "mlp.fc2 3072->768": (768, 3072),
        "attn.qkv 768->2304": (2304, 768),
        "attn.proj 768->768": (768, 768),
    }
    for label, (out_f, in_f) in shapes.items():
        w = torch.randn(out_f, in_f, device=dev, dtype=torch.float16)
        w = w * nm_keep_mask(w.abs(), 2, 4)
        x = torch.randn(tokens, in_f, device=dev, dtype=torch.float16)
        try:
            ws = to_sparse_semi_structured(w)
            err = (torch.nn.functional.linear(x, ws) - torch.nn.functional.linear(x, w)).abs().max().item()
        except (RuntimeError, NotImplementedError) as e:
            print(f"cuda 2:4 {label}: semi-structured sparsity unavailable here ({type(e).__name__}: {e})")
            continue
        t_dense = _cuda_ms(lambda x=x, w=w: torch.nn.functional.linear(x, w))
        t_sparse = _cuda_ms(lambda x=x, ws=ws: torch.nn.functional.linear(x, ws))
        print(
            f"cuda 2:4 {label:20s} x({tokens}x{in_f}) fp16 | dense {t_dense:7.3f} ms | 2:4 {t_sparse:7.3f} ms | "
            f"speed-up {t_dense / t_sparse:5.2f}x | max |diff| {err:.3g}",
            flush=True,
        )


def _cuda_ms(fn, reps: int = 50) -> float:
    for _ in range(5):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / reps


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--cpu-images", type=int, default=128, help="calibration images on CPU (CUDA: 128, the issue's count)"
    )
    ap.add_argument("--block-iters", type=int, default=2, help="measured block iterations per unit on CPU (CUDA: 50)")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    bench_recon(torch.device("cpu"), args.cpu_images, args.block_iters)
    bench_hessian(torch.device("cpu"), 64)
    if torch.cuda.is_available():
        print(f"device: {torch.cuda.get_device_name()}")
        bench_recon(torch.device("cuda"), 128, 50)
        bench_hessian(torch.device("cuda"), 128)
        bench_semi_structured()
    else:
        print("GPU SparseGPT-vs-block and 2:4 speed-up (to_sparse_semi_structured): skipped: no CUDA")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
