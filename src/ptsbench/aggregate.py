"""``ptsbench-aggregate RECORDS_DIR``: reduce run records into tables (minimal version).

Reads every record JSON under RECORDS_DIR and prints, per task and reconstruction setting, the
sparse metric for each model x allocator (rows) and rate (columns), with the dense value.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd


def load_records(records_dir: str | Path) -> list[dict]:
    out = []
    for p in sorted(Path(records_dir).rglob("*.json")):
        try:
            out.append(json.loads(p.read_text()))
        except json.JSONDecodeError:
            continue
    return out


def records_frame(records: list[dict]) -> pd.DataFrame:
    rows = []
    for r in records:
        metric = r["task"]["metric"]
        rows.append({
            "task": r["choices"]["task"], "model": r["model"]["name"], "family": r["model"]["family"],
            "dataset": r["choices"]["dataset"], "allocator": r["choices"]["allocator"],
            "reconstruction": r["choices"]["reconstruction"], "rate": r["sparsity"]["target"],
            "status": r["status"], "metric": metric,
            "dense": (r.get("dense") or {}).get(metric), "sparse": (r.get("sparse") or {}).get(metric),
            "digest": r["digest"],
        })
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("records_dir")
    ap.add_argument("--out", default=None, help="directory for table files")
    args = ap.parse_args(argv)
    df = records_frame(load_records(args.records_dir))
    if df.empty:
        print(f"no records under {args.records_dir}")
        return 1
    ok = df[df.status == "ok"].drop_duplicates("digest")
    for (task, recon), g in ok.groupby(["task", "reconstruction"]):
        table = g.pivot_table(index=["model", "allocator"], columns="rate", values="sparse")
        dense = g.groupby("model")["dense"].first()
        table.insert(0, "dense", [dense[m] for m, _ in table.index])
        print(f"\n## task={task} reconstruction={recon} ({g.metric.iloc[0]} x100)")
        print((100 * table).round(2).to_string())
    failed = df[df.status == "failed"]
    if len(failed):
        print(f"\n{len(failed)} failed run(s): " + ", ".join(failed.model + "/" + failed.allocator))
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        df.to_csv(Path(args.out) / "runs.csv", index=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
