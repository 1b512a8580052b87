"""The embedded benchmark: every track on every zoo model of every task, then the tables and findings.

Each task has one base experiment (``conf/experiment/demo_alloc|demo_det|demo_gen.yaml``: models,
dataset, rates, calibration size). ``TRACKS`` runs each base once per track with extra overrides,
as a real Hydra multirun (``python -m ptsbench.run -m experiment=X ... paths.output_dir=OUT``):
- Table 2: Uniform / L2Norm / ERK (they read no calibration data: one run stands for every seed),
  and FCPTS (ERK) / FCPTS (L2Norm) with 2 calibration seeds;
- Table 3: ERK + reconstruction around the baseline block / sparse input / no correction: block
  with sparse or dense input, with and without correction, and single / layer units, 2 seeds,
  at the highest demo rate; their none twins are the ERK runs of Table 2.
Every other ``demo_*.yaml`` (e.g. one another helper adds) runs once as it is. Budgets are cut
(iterations, samples), never coverage. Finished runs are skipped on a re-run. Ends by aggregating
OUT/records, printing findings.md and the wall time, and an estimate for an idle 2-core machine from
the per-run times in the records (sum of run times / 2 workers + start-up).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
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
ASPECTS = [
    ["reconstruction=block", "++reconstruction.input=sparse,dense", "++reconstruction.error_correction=false,true"],
    ["reconstruction=single,layer", "++reconstruction.input=sparse", "++reconstruction.error_correction=false"],
]
RECON_RATE = 0.7  # the highest demo rate: where reconstruction has most to recover
BASES = ("demo_alloc", "demo_det", "demo_gen")
# (base experiment, extra overrides) in run order; extend here or add a demo_*.yaml
TRACKS = (
    [(b, []) for b in BASES]
    + [(b, FCPTS) for b in BASES]
    + [(b, RECON + a + [f"sparsity.rate={RECON_RATE}"]) for b in BASES for a in ASPECTS]
)


def sweeps() -> list[tuple[str, list[str]]]:
    extra = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("demo_*.yaml") if p.stem not in BASES)
    return TRACKS + [(e, []) for e in extra]


def idle_estimate(records: Path, n_jobs: int = 2) -> tuple[float, int]:
    """(seconds, runs): the records' run times summed and shared by ``n_jobs`` workers."""
    total, n = 0.0, 0
    for p in records.glob("*.json"):
        try:
            rec = json.loads(p.read_text())
            total += float(rec["timing"]["total"])
            n += 1
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return total / n_jobs, n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="outputs/demo", help="output directory (records under OUT/records)")
    ap.add_argument("--only", nargs="*", help="subset of experiments, e.g. demo_alloc demo_gen")
    args = ap.parse_args()
    t0 = time.perf_counter()
    # each skips the checkpoints that exist
    for script in ("train_zoo.py", "train_zoo_gen.py", "train_zoo_det.py"):
        zoo = subprocess.run([sys.executable, str(ROOT / "scripts" / script)], cwd=ROOT)
        if zoo.returncode:
            return zoo.returncode
    plan = [(e, o) for e, o in sweeps() if not args.only or e in args.only]
    startup = []
    for i, (exp, overrides) in enumerate(plan, 1):
        print(
            f"\n=== [{i}/{len(plan)}] {exp} {' '.join(overrides)} ({time.perf_counter() - t0:.0f}s elapsed)", flush=True
        )
        t = time.perf_counter()
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "ptsbench.run",
                "-m",
                f"experiment={exp}",
                *overrides,
                f"paths.output_dir={args.out}",
            ],
            cwd=ROOT,
        )
        startup.append(time.perf_counter() - t)
        print(f"=== {exp}: exit {proc.returncode}, {startup[-1]:.0f}s", flush=True)
        if proc.returncode:
            return proc.returncode
    agg = subprocess.run(
        [sys.executable, "-m", "ptsbench.aggregate", f"{args.out}/records", "--out", f"{args.out}/tables"], cwd=ROOT
    )
    findings = Path(args.out) / "tables" / "findings.md"
    if findings.exists():
        print("\n" + findings.read_text(), flush=True)
    wall = time.perf_counter() - t0
    busy, n = idle_estimate(Path(args.out) / "records")
    print(
        f"\nPTSBench demo wall time: {wall:.0f}s for {n} run records in {len(plan)} sweeps; the records' run "
        f"times sum to {2 * busy:.0f}s, i.e. ~{busy:.0f}s on 2 workers (timed on this machine, so a shared or "
        "loaded machine inflates both)",
        flush=True,
    )
    return agg.returncode


if __name__ == "__main__":
    raise SystemExit(main())
