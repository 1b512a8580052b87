"""Check a tables directory: within every column of Tables 2 and 3 (per aspect), every non-empty
cell rests on the same models (n_models and their names). Reads the tidy ``*_cells.csv``.

    python scripts/check_matched.py outputs/demo/tables
Exit 0 when matched, 1 (listing the columns) when not, 2 when a cells file is missing.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from ptsbench.tables.render import unmatched_columns


def main(argv: list[str]) -> int:
    out = Path(argv[0] if argv else "outputs/demo/tables")
    status = 0
    for stem in ("table2_allocation", "table3_reconstruction"):
        path = out / f"{stem}_cells.csv"
        if not path.exists():
            print(f"{path}: missing")
            return 2
        cells = pd.read_csv(path, keep_default_na=False, na_values=[""])
        bad = unmatched_columns(cells)
        n_cols = cells.groupby(["column", "aspect"] if "aspect" in cells else ["column"]).ngroups
        print(f"{stem}: {n_cols - len(bad)} of {n_cols} column(s) matched (same models in every non-empty cell)")
        for line in bad:
            print(f"  unmatched {line}")
        status |= bool(bad)
    return int(status)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
