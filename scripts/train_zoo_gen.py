"""Train the embedded diffusion models (zoo DDPMs, three widths) deterministically on the MNIST-5k digits.

DDPM training (Ho et al. 2020) on the v-prediction target (Salimans & Ho 2022) with the cosine
noise schedule (Nichol & Dhariwal 2021) of the small diffusers UNet2DModel in
ptsbench/models/diffusion_zoo.py on the 4,000 training digits of ``mnist5k_gen``; the EMA of the weights is saved as
src/ptsbench/zoo_checkpoints/<arch>__mnist5k_gen.pt (kept unless --force), with a JSON
beside it (recipe, train time, dense fid_digits). Then a grid of DDIM samples is written to
outputs/zoo/<arch>_grid.png. All sizes share the recipe. Same seed, recipe and thread count -> the same weights on a
given torch build (CPU).

    python scripts/train_zoo_gen.py                  # every size whose checkpoint is missing
    python scripts/train_zoo_gen.py --arch ddpm_digits --force   # retrain one (~7 CPU-minutes, one thread)
    python scripts/train_zoo_gen.py --grid-only      # only redraw the sample grid and score it
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from omegaconf import OmegaConf  # noqa: E402

from ptsbench.data import build_data  # noqa: E402
from ptsbench.models import diffusion_zoo as dz  # noqa: E402
from ptsbench.models.diffusion import build_ddpm_digits  # noqa: E402

RECIPE = dict(iters=3000, batch=64, lr=3e-3, warmup=0.05, ema=0.995, seed=0)
GRIDS = ROOT / "outputs" / "zoo"


def train(latents: torch.Tensor, recipe: dict, arch: str) -> torch.nn.Module:
    torch.manual_seed(recipe["seed"])
    gen = torch.Generator().manual_seed(recipe["seed"])
    unet, sched = dz.ddpm_digits_unet(arch), dz.ddpm_scheduler()
    ema = copy.deepcopy(unet).eval().requires_grad_(False)
    opt = torch.optim.AdamW(unet.parameters(), lr=recipe["lr"], weight_decay=0.0)
    lr = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=recipe["lr"], total_steps=recipe["iters"], pct_start=recipe["warmup"]
    )
    unet.train()
    t0, running = time.time(), 0.0
    for it in range(1, recipe["iters"] + 1):
        x0 = latents[torch.randint(0, len(latents), (recipe["batch"],), generator=gen)]
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, sched.config.num_train_timesteps, (len(x0),), generator=gen)
        target = sched.get_velocity(x0, noise, t) if sched.config.prediction_type == "v_prediction" else noise
        loss = F.mse_loss(unet(sched.add_noise(x0, noise, t), t).sample, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        lr.step()
        decay = min(recipe["ema"], (1 + it) / (10 + it))  # short warm-up of the average
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), unet.parameters()):
                pe.lerp_(p, 1 - decay)
        running += loss.item()
        if it % 100 == 0:
            print(
                f"  {arch} iter {it}/{recipe['iters']} loss {running / 100:.4f} ({time.time() - t0:.0f}s)",
                flush=True,
            )
            running = 0.0
    return ema


def score_and_grid(data, num_samples: int, steps: int, arch: str) -> float:
    """Dense fid_digits of the saved checkpoint (the task's own evaluation) and a sample grid."""
    from torchvision.utils import save_image

    from ptsbench.schemas import typed
    from ptsbench.tasks.generation import GenerationConfig, GenerationTask

    model = build_ddpm_digits("zoo", arch)
    GRIDS.mkdir(parents=True, exist_ok=True)
    save_image(model.sample(64, steps, seed=1234), GRIDS / f"{arch}_grid.png", nrow=8, padding=2, pad_value=0.5)
    knobs = {"name": "gen", "metric": "fid_digits", "num_samples": num_samples, "steps": steps, "sample_batch": 250}
    task = GenerationTask(typed("task", GenerationConfig, knobs))
    return task.evaluate(model, data, torch.device("cpu"))["fid_digits"]


def train_and_score(arch: str, args, data) -> None:
    path = dz.zoo_path(arch)
    meta_path = path.with_suffix(".json")
    if path.exists() and not (args.force or args.grid_only):
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        print(f"{arch}: dense fid_digits {meta.get('fid_digits', '?')} (checkpoint {path.name})")
        return
    if not args.grid_only:
        recipe = {**RECIPE, "iters": args.iters}
        t0, cpu0 = time.time(), time.process_time()
        ema = train(dz.PixelFold().encode(data.train.tensors[0]), recipe, arch)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(ema.state_dict(), path)
        meta = {
            "arch": arch,
            "dataset": dz.DATASET,
            **recipe,
            "threads": args.threads,
            "train_seconds": round(time.time() - t0, 1),
            "train_cpu_seconds": round(time.process_time() - cpu0, 1),
            "params": sum(p.numel() for p in ema.parameters()),
        }
        meta_path.write_text(json.dumps(meta, indent=1))  # the training facts survive a failed scoring
    else:
        meta = json.loads(meta_path.read_text())
    t0 = time.time()
    fid = score_and_grid(data, args.eval_samples, args.eval_steps, arch)
    meta.update(
        {
            "fid_digits": round(fid, 4),
            "fid_eval": {
                "num_samples": args.eval_samples,
                "steps": args.eval_steps,
                "seed": 0,
                "reference": "mnist5k_gen test (1,000)",
            },
        }
    )
    meta_path.write_text(json.dumps(meta, indent=1))
    print(
        f"{arch}: dense fid_digits {fid:.3f} ({args.eval_samples} samples, {args.eval_steps} DDIM steps, "
        f"{time.time() - t0:.0f}s); checkpoint -> {path.name}",
        flush=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", choices=tuple(dz.ZOO_WIDTHS), action="append", help="size(s) to train (default: all)")
    ap.add_argument("--force", action="store_true", help="retrain even if the checkpoint exists")
    ap.add_argument("--grid-only", action="store_true", help="redraw the grid and rescore; no training")
    ap.add_argument("--iters", type=int, default=RECIPE["iters"])
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on shared cores)")
    ap.add_argument("--eval-samples", type=int, default=1000)
    ap.add_argument("--eval-steps", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = build_data(
        OmegaConf.load(Path(__file__).resolve().parents[1] / "conf" / "dataset" / f"{dz.DATASET}.yaml"),
        OmegaConf.create({"num_samples": 64, "seed": 0}),
    )
    for arch in args.arch or dz.ZOO_WIDTHS:
        train_and_score(arch, args, data)


if __name__ == "__main__":
    main()
