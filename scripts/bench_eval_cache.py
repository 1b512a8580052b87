"""Evaluation speed with and without the uint8 evaluation cache (``dataset.eval_cache``).

Generates a JPEG ImageFolder of ImageNet-like images (default 400 val images, 500x375 as the
ImageNet average), then reads the whole val split through the real ImageNet loader at the
torchvision eval transform (resize 256, crop 224, normalise) in the same run:
- baseline: decode + resize + crop every JPEG, as every run of a sweep would;
- cached: the same split from the uint8 cache written once (its one-off build time is shown).
Prints images/s of both and their ratio, and checks that both give the same batches.
    python scripts/bench_eval_cache.py [--images 400] [--workers 0] [--threads 1]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from PIL import Image

from ptsbench.data import build_data
from ptsbench.models.library import eval_preprocess

ROOT = Path(__file__).resolve().parents[1]


def make_folder(root: Path, num_val: int, size: tuple[int, int], seed: int = 0) -> None:
    """JPEGs with smooth structure plus noise, so they compress and decode like photos."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : size[1], 0 : size[0]].astype(np.float32)
    for split, n in (("train", 4), ("val", num_val)):
        for i in range(n):
            wnid = ("n01440764", "n01443537")[i % 2]
            (root / split / wnid).mkdir(parents=True, exist_ok=True)
            f = rng.uniform(0.005, 0.05, size=3)
            base = 127 + 100 * np.sin(xx[..., None] * f + yy[..., None] * f[::-1] + rng.uniform(0, 6, size=3))
            pixels = np.clip(base + rng.normal(0, 12, size=base.shape), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / split / wnid / f"img_{i}.JPEG", quality=90)


def images_per_second(data, batch_size: int) -> tuple[float, list[torch.Tensor]]:
    t0 = time.perf_counter()
    batches = [x for x, _ in data.test_loader(batch_size)]
    return sum(len(x) for x in batches) / (time.perf_counter() - t0), batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--workers", type=int, default=0, help="decoding processes for both paths")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=100)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = OmegaConf.load(ROOT / "conf" / "model" / "resnet18.yaml")
    calib = OmegaConf.create({"num_samples": 2, "seed": 0})
    with tempfile.TemporaryDirectory() as tmp:
        root, cache = Path(tmp) / "imagenet", Path(tmp) / "cache"
        make_folder(root, args.images, (500, 375))
        cfg = OmegaConf.merge(
            OmegaConf.load(ROOT / "conf" / "dataset" / "imagenet.yaml"),
            {"root": str(root), "num_workers": args.workers},
        )
        plain = build_data(cfg, calib, preprocess=eval_preprocess(model))
        t0 = time.perf_counter()
        cached = build_data(
            OmegaConf.merge(cfg, {"eval_cache": True}), calib, preprocess=eval_preprocess(model), cache_dir=cache
        )
        build_s = time.perf_counter() - t0
        base_ips, base_batches = images_per_second(plain, args.batch_size)
        cache_ips, cache_batches = images_per_second(cached, args.batch_size)
        same = all(torch.equal(a, b) for a, b in zip(base_batches, cache_batches))
        size_mb = Path(cached.meta["eval_cache"]).stat().st_size / 2**20
    print(
        f"val split: {args.images} JPEGs 500x375 -> 224x224 (resize 256, center crop), "
        f"workers={args.workers}, threads={args.threads}"
    )
    print(f"cache build (once per sweep): {build_s:.2f} s, {size_mb:.1f} MB uint8")
    print(f"no cache (decode every run): {base_ips:8.1f} images/s")
    print(f"eval cache (memory-mapped) : {cache_ips:8.1f} images/s")
    print(f"speed-up: {cache_ips / base_ips:.1f}x   identical batches: {same}")


if __name__ == "__main__":
    main()
