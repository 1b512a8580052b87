"""Top-1 and time of the allocators and criteria published after the paper, on the embedded zoo.

Uniform / ERK / OWL / AlphaPruning with magnitude and with Wanda (per output row), RIA and
DSnoT-refined Wanda against Wanda (uniform allocation), no reconstruction, at two rates; MNIST-5k,
128 calibration images, 300 test digits. One process, records under --out (aggregate them with
``ptsbench-aggregate OUT/records --out OUT/tables`` for Table 2, the methods table and the findings).

    OMP_NUM_THREADS=1 nice -n 10 python scripts/measure_newer_methods.py --out /tmp/newer
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from ptsbench import config_dir
from ptsbench.config import register
from ptsbench.pipeline import run

MODELS = ["zoo_resnet20", "zoo_resnet32", "zoo_resnet56", "zoo_mobilenetv2_x0.5", "zoo_mobilenetv2_x1.0"]
MODELS += ["zoo_vit_d64", "zoo_vit_d96"]
ROWS = {
    "Uniform/magnitude": ["allocator=uniform"],
    "ERK/magnitude": ["allocator=erk"],
    "OWL/magnitude": ["allocator=owl"],
    "AlphaPruning/magnitude": ["allocator=alphapruning", "allocator.eps=0.1"],
    "Uniform/Wanda": ["allocator=uniform", "method=wanda"],
    "ERK/Wanda": ["allocator=erk", "method=wanda"],
    "OWL/Wanda": ["allocator=owl", "method=wanda"],
    "AlphaPruning/Wanda": ["allocator=alphapruning", "allocator.eps=0.1", "method=wanda"],
    "Uniform/RIA": ["allocator=uniform", "method=ria"],
    "Uniform/Wanda+DSnoT": ["allocator=uniform", "method=wanda_dsnot"],
}


PAIRS = [  # (row, baseline): paired per model and rate
    ("OWL/Wanda", "Uniform/Wanda"),
    ("OWL/magnitude", "Uniform/magnitude"),
    ("AlphaPruning/magnitude", "Uniform/magnitude"),
    ("AlphaPruning/Wanda", "Uniform/Wanda"),
    ("ERK/magnitude", "Uniform/magnitude"),
    ("ERK/Wanda", "Uniform/Wanda"),
    ("Uniform/RIA", "Uniform/Wanda"),
    ("Uniform/Wanda+DSnoT", "Uniform/Wanda"),
]


def family(model: str) -> str:
    return "ViT" if "vit" in model else "MobileNetV2" if "mobilenet" in model else "ResNet"


def summarize(rows: list[dict]) -> str:
    """Mean top-1 per row and rate, mean allocate+mask seconds, and each pair's top-1 difference per family."""
    ok = [r for r in rows if "error" not in r]
    rates = sorted({r["rate"] for r in ok})
    out = ["| row | " + " | ".join(f"top-1 % at {x}" for x in rates) + " | allocate+mask s |"]
    out.append("|---" * (len(rates) + 2) + "|")
    for label in dict.fromkeys(r["row"] for r in ok):
        sel = [r for r in ok if r["row"] == label]
        cells = [
            sum(r["top1"] for r in sel if r["rate"] == x) / max(1, sum(r["rate"] == x for r in sel)) for x in rates
        ]
        secs = sum(r["alloc_mask_s"] for r in sel) / len(sel)
        out.append(f"| {label} | " + " | ".join(f"{100 * c:.1f}" for c in cells) + f" | {secs:.2f} |")
    for a, b in PAIRS:
        base = {(r["model"], r["rate"]): r["top1"] for r in ok if r["row"] == b}
        for fam in ("ResNet", "MobileNetV2", "ViT"):
            d = [
                100 * (r["top1"] - base[r["model"], r["rate"]])
                for r in ok
                if r["row"] == a and family(r["model"]) == fam and (r["model"], r["rate"]) in base
            ]
            if d:
                out.append(
                    f"{a} - {b} [{fam}]: {sum(d) / len(d):+.1f} points over {len(d)} (model, rate) pairs, "
                    f"{sum(v > 0 for v in d)} up, {sum(v < 0 for v in d)} down"
                )
    out += [f"refused or failed: {r}" for r in rows if "error" in r]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/newer")
    ap.add_argument("--rates", default="0.7,0.8")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--rows", default=None, help="comma-separated row labels (default: all)")
    ap.add_argument("--extra", default="", help="overrides added to every run, space-separated")
    ap.add_argument("--summarize", nargs="*", help="only print the summary of these measure-*.json files")
    args = ap.parse_args()
    if args.summarize:
        print(summarize([r for f in args.summarize for r in json.loads(Path(f).read_text())]))
        return
    rows_run = {k: v for k, v in ROWS.items() if args.rows is None or k in args.rows.split(",")}
    torch.set_num_threads(1)
    logging.getLogger("ptsbench").setLevel(logging.WARNING)
    rows = []
    register()  # the schema nodes and resolvers the config files name (as the entry points do)
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        for model in args.models.split(","):
            for rate in args.rates.split(","):
                for label, extra in rows_run.items():
                    over = [f"model={model}", "dataset=mnist5k", "calib.num_samples=128", "dataset.num_test=300"]
                    over += [f"sparsity.rate={rate}", f"paths.output_dir={args.out}", *extra, *args.extra.split()]
                    t0 = time.perf_counter()
                    try:
                        rec = run(compose(config_name="config", overrides=over), over)
                    except Exception as e:  # noqa: BLE001 - a refused or failed cell is reported, not fatal
                        rows.append({"model": model, "rate": rate, "row": label, "error": str(e).splitlines()[0]})
                        print(rows[-1], flush=True)
                        continue
                    t = rec["timing"]
                    rows.append(
                        {
                            "model": model,
                            "rate": float(rate),
                            "row": label,
                            "dense": rec["dense"]["top1"],
                            "top1": rec["sparse"]["top1"],
                            "alloc_mask_s": round(t.get("allocate", 0) + t.get("mask", 0), 3),
                            "wall_s": round(time.perf_counter() - t0, 2),
                        }
                    )
                    print(rows[-1], flush=True)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / f"measure-{time.strftime('%H%M%S')}.json").write_text(json.dumps(rows, indent=1))
    print(summarize(rows))


if __name__ == "__main__":
    main()
