"""How well ``ptsbench-plan`` predicts: fit its cost model on half of a records folder, predict the other half.

    python scripts/check_plan.py RECORDS_DIR [--device cpu]

The ``ok`` records are ordered by digest and split alternately (deterministic): even positions calibrate
the cost model (``ptsbench.cost_model``), odd ones are predicted from their configs alone. The compared
time is each run's own work, ``timing.total`` minus ``dense_eval`` (the dense evaluation is cached per
model and dataset, so whether a run paid it depends on the order runs happened to start; the planner
charges it once per group). Prints predicted vs measured per run, then the median absolute relative
error (target <= 30%) and how many runs were unpredictable. Exit 1 above the target.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from ptsbench.cost_features import features, record_device  # noqa: E402
from ptsbench.cost_model import Sample, fit  # noqa: E402

TARGET = 0.30


def load(records_dir: Path) -> list[dict]:
    recs = {}
    for path in sorted(records_dir.rglob("*.json")):
        try:
            rec = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(rec, dict) and rec.get("status") == "ok" and rec.get("timing"):
            recs.setdefault(rec["digest"], rec)
    return [recs[d] for d in sorted(recs)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("records_dir", type=Path)
    ap.add_argument("--device", default=None, help="only records of this device (default: all)")
    args = ap.parse_args()
    records = [r for r in load(args.records_dir) if args.device is None or args.device in record_device(r)]
    if len(records) < 4:
        print(f"error: {len(records)} ok records under {args.records_dir}; need at least 4", file=sys.stderr)
        return 2
    samples = []
    for rec in records:
        dev = record_device(rec)
        mem = (rec.get("memory") or {}).get("host_peak_mb" if dev == "cpu" else "device_peak_mb")
        samples.append(Sample(features(rec["config"], dev, rec["model"].get("params")), rec["timing"], mem))
    model = fit(samples[0::2])
    print(f"fit on {len(samples[0::2])} records, predicting {len(samples[1::2])} ({args.records_dir})")
    print(f"{'run':<62} {'basis':<13} {'predicted s':>11} {'measured s':>10} {'error':>7}")
    errors, unpredictable, total_p, total_m = [], 0, 0.0, 0.0
    for rec, s in zip(records[1::2], samples[1::2]):
        pred = model.predict(s.features)
        measured = float(rec["timing"]["total"]) - float(rec["timing"].get("dense_eval", 0.0))
        if pred.total is None:
            unpredictable += 1
            print(
                f"{rec['name'][:62]:<62} {'-':<13} {'-':>11} {measured:>10.2f}   (no comparable record: {', '.join(pred.missing)})"
            )
            continue
        basis = next((b for b in ("other models", "same family") if b in pred.basis.values()), "same model")
        err = (pred.total - measured) / measured
        errors.append(abs(err))
        total_p, total_m = total_p + pred.total, total_m + measured
        print(f"{rec['name'][:62]:<62} {basis:<13} {pred.total:>11.2f} {measured:>10.2f} {err:>+7.0%}")
    median = statistics.median(errors)
    print(
        f"median absolute relative error {median:.1%} over {len(errors)} runs (target <= {TARGET:.0%}); "
        f"{unpredictable} unpredictable; summed predicted {total_p / 3600:.3f} h vs measured {total_m / 3600:.3f} h"
    )
    return 0 if median <= TARGET else 1


if __name__ == "__main__":
    raise SystemExit(main())
