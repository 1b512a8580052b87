"""Sparse kernels vs dense per layer shape of ResNet-50 and ViT-B/16 (random weights): the speed-up of the
backend the latency planner would choose (src/ptsbench/speed/latency.py) over the dense kernel, measured in
the same run, at 50/70/90% unstructured and 2:4.

For each shape and pattern: the dense layer (the baseline) and every candidate sparse backend
(speed/sparse_layers.py: CSR on CPU and CUDA, 2:4 semi-structured on CUDA for 2:4) are timed on
the same input (median of repeats after warm-up); "chosen" is the planner's pick (a sparse backend
only when it takes <= 95% of dense), so its speed-up is 1.00 when dense wins. 3x3 convs have no
sparse backend and are listed once as such. CUDA lines run in float16 (the 2:4 kernels' dtype)
and print "skipped: no CUDA" without a GPU.

    python scripts/bench_sparse_kernels.py [--threads 1] [--repeats 9] [--cnn-batch 1] [--vit-batch 1]
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from ptsbench.sparsity.selection import nm_keep_mask  # noqa: E402
from ptsbench.speed.latency import choose, median_seconds  # noqa: E402
from ptsbench.speed.sparse_layers import candidates, make_sparse  # noqa: E402

PATTERNS = ("50%", "70%", "90%", "2:4")


def shapes(cnn_batch: int, vit_batch: int) -> list[tuple[str, nn.Module, tuple[int, ...]]]:
    """(label, layer, input shape): ResNet-50's distinct 1x1 convs and its fc at 224x224, a 3x3 conv,
    and ViT-B/16's Linear layers at 197 tokens (head: the class token)."""
    out = []
    for c_in, c_out, hw in [
        (64, 256, 56),
        (256, 64, 56),
        (256, 128, 56),
        (128, 512, 28),
        (512, 128, 28),
        (256, 1024, 14),
        (1024, 256, 14),
        (512, 2048, 7),
        (2048, 512, 7),
    ]:
        out.append((f"resnet50 1x1 {c_in}->{c_out} @{hw}", nn.Conv2d(c_in, c_out, 1), (cnn_batch, c_in, hw, hw)))
    out.append(("resnet50 fc 2048->1000", nn.Linear(2048, 1000), (cnn_batch, 2048)))
    out.append(("resnet50 3x3 128->128 @28", nn.Conv2d(128, 128, 3, padding=1), (cnn_batch, 128, 28, 28)))
    for label, c_in, c_out in [("qkv", 768, 2304), ("proj", 768, 768), ("fc1", 768, 3072), ("fc2", 3072, 768)]:
        out.append((f"vit_b16 {label} {c_in}->{c_out} x197", nn.Linear(c_in, c_out), (vit_batch, 197, c_in)))
    out.append(("vit_b16 head 768->1000", nn.Linear(768, 1000), (vit_batch, 768)))
    return out


@torch.no_grad()
def prune(layer: nn.Module, pattern: str) -> None:
    w = layer.weight
    if pattern == "2:4":
        w.mul_(nm_keep_mask(w.abs(), 2, 4))
    else:
        w.mul_(torch.rand_like(w) >= float(pattern.rstrip("%")) / 100)


@torch.no_grad()
def bench_line(label, layer, in_shape, pattern, device, dtype, warmup, repeats) -> str:
    torch.manual_seed(0)
    layer = copy.deepcopy(layer).to(device=device, dtype=dtype).eval()  # each pattern prunes the dense weights
    prune(layer, pattern)
    density = float((layer.weight != 0).float().mean())
    x = torch.randn(in_shape, device=device, dtype=dtype)
    nm = (2, 4) if pattern == "2:4" else None
    ms, failed = {}, []
    for backend in candidates(layer, device, nm, dtype):
        try:
            fn = make_sparse(layer, backend)
            ms[backend] = median_seconds(lambda fn=fn: fn(x), device, warmup, repeats) * 1e3
        except (RuntimeError, NotImplementedError, ValueError) as e:
            failed.append(f"{backend}: {type(e).__name__}")
    chosen = choose(ms)
    others = "  ".join(f"{b} {t:.3f}ms ({ms['dense'] / t:.2f}x)" for b, t in ms.items() if b != "dense")
    return (
        f"{device.type:4s} {label:34s} {pattern:>4s} (density {density:.2f})  dense {ms['dense']:8.3f}ms  {others or 'no sparse backend'}"
        f"  -> chosen {chosen}: {ms['dense'] / ms[chosen]:.2f}x"
        + (f"  [unavailable: {', '.join(failed)}]" if failed else "")
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--cnn-batch", type=int, default=1)
    ap.add_argument("--vit-batch", type=int, default=1)
    ap.add_argument("--cuda-batch", type=int, default=32, help="batch of both models on CUDA")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} CPU thread(s), median of {args.repeats} after 3 warm-up calls")
    cpu = torch.device("cpu")
    for label, layer, in_shape in shapes(args.cnn_batch, args.vit_batch):
        for pattern in PATTERNS if candidates(layer, cpu, None, torch.float32) != ["dense"] else PATTERNS[:1]:
            print(bench_line(label, layer, in_shape, pattern, cpu, torch.float32, 3, args.repeats), flush=True)
    if not torch.cuda.is_available():
        print("cuda: skipped: no CUDA")
        return
    gpu = torch.device("cuda")
    print(f"cuda: {torch.cuda.get_device_name(gpu)}, CUDA {torch.version.cuda}, float16, batch {args.cuda_batch}")
    for label, layer, in_shape in shapes(args.cuda_batch, args.cuda_batch):
        for pattern in PATTERNS:
            print(
                bench_line(label, layer, in_shape, pattern, gpu, torch.float16, 10, max(args.repeats, 20)), flush=True
            )


if __name__ == "__main__":
    main()
