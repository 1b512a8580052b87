"""Train the embedded detectors deterministically on digits_det and save the checkpoints.

Each checkpoint lands in src/ptsbench/zoo_checkpoints/<arch>__digits_det.pt (loaded by
``model.weights=zoo``) with a .json beside it holding its dense test mAP; existing ones are kept
unless --force. Same seed, same canvases, same recipe, one thread -> the same weights on a given
torch build. The detectors train in parallel processes of one thread each (--jobs): small
convolutions gain little from a second thread, and a busy CPU makes threads wait on each other.

    python scripts/train_zoo_det.py                     # all missing detectors
    python scripts/train_zoo_det.py --only small_retinanet_resnet8 --force
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from omegaconf import OmegaConf  # noqa: E402

from ptsbench.data import build_data  # noqa: E402
from ptsbench.models import save_zoo_checkpoint, zoo_checkpoint_path  # noqa: E402
from ptsbench.models.detection import DET_ARCHS  # noqa: E402
from ptsbench.models.sources import LibraryModelConfig  # noqa: E402
from ptsbench.schemas import typed  # noqa: E402
from ptsbench.tasks.base import TaskConfig  # noqa: E402
from ptsbench.tasks.detection import DetectionTask  # noqa: E402

DATASET = "digits_det"
# arch -> (epochs, peak lr, max grad norm or None); AdamW + one-cycle, batch 32
RECIPES = {
    "small_retinanet_resnet8": (8, 2e-3, 1.0),
    "small_retinanet_resnet8_x0.5": (8, 2e-3, 1.0),
    "small_ssdlite_mobilenetv2": (6, 3e-3, None),
}
BATCH = 32


def train_one(arch: str, data, epochs: int, lr: float, clip: float | None, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    cfg = typed(
        "model", LibraryModelConfig, {"name": arch, "arch": arch, "source": "torchvision_det", "weights": "none"}
    )
    model = DET_ARCHS.get(arch)(cfg, data.num_classes + 1, data.in_chans, data.img_size)
    images, targets = data.train.images, data.train.targets
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * (len(images) // BATCH)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    model.train()
    for epoch in range(epochs):
        perm = torch.randperm(len(images), generator=gen)
        for i in range(0, len(images) - BATCH + 1, BATCH):
            idx = perm[i : i + BATCH].tolist()
            losses = model([images[j] for j in idx], [targets[j] for j in idx])
            loss = sum(losses.values())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
            sched.step()
        parts = " ".join(f"{k} {v.item():.3f}" for k, v in losses.items())
        print(f"  {arch} epoch {epoch + 1}/{epochs} {parts}", flush=True)
    return model.eval()


def train_and_save(arch: str, threads: int) -> None:
    torch.set_num_threads(threads)
    # the same canvases the benchmark evaluates on: the dataset's own config file
    data = build_data(
        OmegaConf.load(ROOT / "conf" / "dataset" / f"{DATASET}.yaml"), OmegaConf.create({"num_samples": 64, "seed": 0})
    )
    t0 = time.time()
    epochs, lr, clip = RECIPES[arch]
    model = train_one(arch, data, epochs, lr, clip)
    task = DetectionTask(typed("task", TaskConfig, {"name": "det", "metric": "map50"}))
    metrics = task.evaluate(model, data, torch.device("cpu"))
    meta = {**metrics, "epochs": epochs, "lr": lr, "clip": clip, "threads": threads}
    path = save_zoo_checkpoint(model.state_dict(), arch, DATASET, {**meta, "train_seconds": round(time.time() - t0, 1)})
    print(
        f"{arch}: dense test mAP@0.5 {metrics['map50']:.3f}, mAP {metrics['map']:.3f} "
        f"({time.time() - t0:.0f}s) -> {path.name}",
        flush=True,
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", default=None, help=f"subset of {list(RECIPES)}")
    ap.add_argument("--force", action="store_true", help="retrain even if a checkpoint exists")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per detector")
    ap.add_argument("--jobs", type=int, default=2, help="detectors trained at once, one process each")
    args = ap.parse_args()
    for arch in args.only or []:
        if arch not in RECIPES:
            ap.error(f"--only {arch}: unknown detector; valid choices: {', '.join(RECIPES)}")
    archs = args.only or list(RECIPES)
    todo = [a for a in archs if args.force or not zoo_checkpoint_path(a, DATASET).exists()]
    for arch in [a for a in archs if a not in todo]:
        meta_path = zoo_checkpoint_path(arch, DATASET).with_suffix(".json")
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        print(f"{arch}: dense test mAP@0.5 {meta.get('map50', float('nan')):.3f} (checkpoint {meta_path.stem}.pt)")
    if len(todo) == 1 or args.jobs <= 1:
        for arch in todo:
            train_and_save(arch, args.threads)
        return 0
    # one process per detector: each trains single-threaded, so the result does not depend on --jobs
    running: list[subprocess.Popen] = []
    failed = 0
    for arch in todo:
        while len(running) >= args.jobs:
            failed += running.pop(0).wait() != 0
        running.append(
            subprocess.Popen([sys.executable, __file__, "--only", arch, "--force", "--threads", str(args.threads)])
        )
    for proc in running:
        failed += proc.wait() != 0
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
