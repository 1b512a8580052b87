"""``make smoke``: the paper-table experiments (table2, table3, table4, table6) at smoke size on the embedded
stand-ins, each sweep aggregating its tables, in a minute or a few on CPU.

Every sweep is the experiment as shipped with ``debug=fast`` (conf/debug/fast.yaml: 32 calibration samples,
4 optimisation steps, 200 test samples, one rate) and its real-data cases swapped for the embedded ones
(conf/case/embedded_{cls,det,gen}.yaml; table6: the zoo's CLS families on MNIST-5k). Exits non-zero if any
sweep or run failed, and prints the wall time of each sweep.
    python scripts/smoke.py [--out outputs/smoke] [extra overrides, e.g. hydra/launcher=parallel]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

STAND_INS = {
    "table2": ["+case=embedded_cls,embedded_det,embedded_gen"],
    "table4": ["+case=embedded_cls,embedded_det,embedded_gen"],  # also the reconstruction=none twins of table3
    "table3": ["+case=embedded_cls,embedded_det,embedded_gen"],
    "table6": [
        "model=zoo_resnet20,zoo_resnet56,zoo_mobilenetv2_x0.5,zoo_mobilenetv2_x1.0,zoo_vit_d64,zoo_vit_d96",
        "dataset=mnist5k",
        "dataset.root=null",
    ],
}


def sweep_command(experiment: str, out: str, extra: list[str]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "ptsbench.run",
        "-m",
        f"experiment={experiment}",
        "debug=fast",
        *STAND_INS[experiment],
        f"paths.output_dir={out}",
        *extra,
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="outputs/smoke", help="output folder (records, tables)")
    ap.add_argument("--only", nargs="*", default=list(STAND_INS), choices=list(STAND_INS))
    args, extra = ap.parse_known_args(argv)
    t0, failed = time.perf_counter(), []
    for experiment in args.only:
        t = time.perf_counter()
        code = subprocess.call(sweep_command(experiment, args.out, extra))
        print(f"[smoke] experiment={experiment} debug=fast: exit {code} in {time.perf_counter() - t:.0f} s", flush=True)
        if code:
            failed.append(experiment)
    print(
        f"[smoke] {len(args.only) - len(failed)} of {len(args.only)} sweeps ok in {time.perf_counter() - t0:.0f} s; "
        f"tables in {args.out}/tables" + (f"; failed: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
