"""The embedded benchmark: every ``conf/experiment/demo_*.yaml`` sweep, then the tables.

Each demo experiment is run as a real Hydra multirun (``python -m ptsbench.run -m
experiment=demo_X paths.output_dir=OUT``), so the demo exercises exactly the CLI a user runs;
finished runs are skipped on a re-run. Ends by aggregating OUT/records and printing wall time.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="outputs/demo", help="output directory (records under OUT/records)")
    ap.add_argument("--only", nargs="*", help="subset of demo experiments, e.g. demo_alloc")
    args = ap.parse_args()
    t0 = time.perf_counter()
    # each skips the checkpoints that exist
    for script in ("train_zoo.py", "train_zoo_gen.py", "train_zoo_det.py"):
        zoo = subprocess.run([sys.executable, str(ROOT / "scripts" / script)], cwd=ROOT)
        if zoo.returncode:
            return zoo.returncode
    experiments = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("demo_*.yaml"))
    if args.only:
        experiments = [e for e in experiments if e in args.only]
    for i, exp in enumerate(experiments, 1):
        print(f"\n=== [{i}/{len(experiments)}] {exp} ({time.perf_counter() - t0:.0f}s elapsed)", flush=True)
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "ptsbench.run", "-m", f"experiment={exp}",
                               f"paths.output_dir={args.out}"], cwd=ROOT)
        print(f"=== {exp}: exit {proc.returncode}, {time.perf_counter() - t:.0f}s", flush=True)
        if proc.returncode:
            return proc.returncode
    agg = subprocess.run([sys.executable, "-m", "ptsbench.aggregate", f"{args.out}/records",
                          "--out", f"{args.out}/tables"], cwd=ROOT)
    print(f"\nPTSBench demo wall time: {time.perf_counter() - t0:.0f}s", flush=True)
    return agg.returncode


if __name__ == "__main__":
    raise SystemExit(main())
