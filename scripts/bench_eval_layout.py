"""Classifier evaluation with NCHW inputs (the default) against NHWC inputs (``eval.channels_last=true``).

Runs ``ptsbench.tasks.classification.classify`` on the same batches both ways in the same process, for
EfficientNet-Lite0/2 (timm's architecture at their input sizes; the layout's speed does not depend on the
weights, so no download or package is needed) and a zoo ResNet-20 at 28x28, and prints seconds, the ratio
and the largest logit difference (the layout changes kernels, not the function: float rounding only).
    python scripts/bench_eval_layout.py [--images 60] [--threads 1] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import torch

from ptsbench.tasks.classification import classify

CASES = [("tf_efficientnet_lite0", 224), ("tf_efficientnet_lite2", 260), ("cifar_resnet20", 28)]


def build(arch: str) -> torch.nn.Module:
    if arch.startswith("tf_"):
        import timm

        return timm.create_model(arch, pretrained=False)
    from ptsbench.models.zoo import ZOO_ARCHS

    return ZOO_ARCHS.get(arch)(10, 1, 28)


def timed(model, loader, channels_last: bool, repeats: int) -> tuple[float, torch.Tensor]:
    classify(model, loader[:1], "cpu", channels_last)  # warm-up: kernel selection, allocator
    best, logits = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        logits, _ = classify(model, loader, "cpu", channels_last)
        best = min(best, time.perf_counter() - t0)
    return best, logits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=60)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"{'model':<24}{'input':>6}{'NCHW s':>9}{'NHWC s':>9}{'ratio':>8}{'max |dlogit|':>14}")
    for arch, size in CASES:
        model = build(arch).eval()
        channels = 1 if arch.startswith("cifar") else 3
        x = torch.randn(args.images, channels, size, size)
        loader = [(x[i : i + 20], torch.zeros(len(x[i : i + 20]), dtype=torch.long)) for i in range(0, len(x), 20)]
        nchw, ref = timed(model, loader, False, args.repeats)
        nhwc, out = timed(model, loader, True, args.repeats)
        diff = float((ref - out).abs().max())
        print(f"{arch:<24}{size:>6}{nchw:>9.2f}{nhwc:>9.2f}{nchw / nhwc:>7.2f}x{diff:>14.2e}")


if __name__ == "__main__":
    main()
