"""Rebuild the PTSBench track tables from run records (thin wrapper of ``ptsbench.aggregate``).

python scripts/aggregate.py outputs/demo/records --out outputs/demo/tables
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from ptsbench.aggregate import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
