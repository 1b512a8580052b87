"""The five PTSBench track tables (paper §3, Tables 2-6) built from run records.

``build_tables(runset)`` returns them in paper order; ``ptsbench.aggregate`` writes and prints
them. One module per table; the formulas themselves live in ``ptsbench.metrics``, the
statistics (model-level estimates, intervals, verdicts) in ``evidence``, ``cells`` and ``verdicts``.
"""

from __future__ import annotations

from .allocation import allocation_table, rate_curves, wanda_allocation_table
from .architecture import architecture_tables
from .base import TrackTable
from .evidence import JACKKNIFE
from .family_gain import family_gain_table
from .methods import methods_table, paper_methods
from .ranking import ranking_table
from .reconstruction import reconstruction_table
from .runs import RunSet, load_runs
from .tasks import tasks_table
from .verdicts import MIN_MODELS

__all__ = [
    "RunSet",
    "TrackTable",
    "beyond_tables",
    "build_tables",
    "load_runs",
    "methods_table",
    "paper_methods",
    "rate_curves",
]


def build_tables(
    runset: RunSet,
    model_allocator: str = "l2norm",
    matched: bool = True,
    recon_baseline: dict | None = None,
    min_models: int = MIN_MODELS,
    kind: str = JACKKNIFE,
):
    """(tables in paper order [2, 3, 6, 4, 5], per-size G_size frame for Fig. 5).

    ``matched`` (default): every compared row covers the same cells (``tables.matching``);
    False keeps all runs and leaves the rows that lack cells out of Table 5. They read the paper's
    methods only (magnitude masks, unstructured); ``methods_table`` compares the others.
    ``min_models``: models per task a Table 5 order needs; ``kind``: the interval method."""
    runset = paper_methods(runset)
    t2 = allocation_table(runset, matched, kind)
    t3 = reconstruction_table(runset, matched, recon_baseline, kind)
    t6, sizes = architecture_tables(runset, model_allocator, matched=matched, kind=kind)
    t4 = tasks_table(runset, model_allocator, matched, kind)
    t5 = ranking_table(t2, t3, t4, t6, min_models)
    return [t2, t3, t6, t4, t5], sizes


def beyond_tables(runset: RunSet, matched: bool = True, kind: str = JACKKNIFE) -> list[TrackTable]:
    """The tables beyond the paper that have runs: Table 2 on Wanda masks (``alloc-wanda``) and the gain of
    each non-uniform allocator per family (``alloc-family``). The methods table (``methods_table``) is the
    other one."""
    tables = [wanda_allocation_table(runset, matched, kind), family_gain_table(paper_methods(runset), matched, kind)]
    return [t for t in tables if not t.values.dropna(how="all").empty]
