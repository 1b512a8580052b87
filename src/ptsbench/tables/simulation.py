"""Calibration of the evidence rules by simulation: synthetic records with a known effect, fed to
the real aggregation (the record loader -> Table 2 -> the finding 'learning the allocation improves
on its ERK initialisation'), at the demo's shapes (docs/methods.md#evidence).

Each replicate draws, for every task (CLS, DET, GEN) and n models: a model effect per rate shared
by both rows (models differ far more than allocators do), an effect of FCPTS that varies by model
around its mean ``effect`` (the interaction), and seed noise for the seeded row. ERK reads no
calibration data (one run per model and rate, as in the demo); FCPTS (ERK) has 2 calibration
seeds. The records of one replicate go through the real loader (``runs.run_row``); the replicates
then enter one Table 2 as rows of their own ('ERK #17', 'FCPTS (ERK) #17', on the same models),
which gives each replicate exactly the numbers it would get alone (a row's estimate depends on its
own runs only) at a fraction of the cost. The truth of each checked quantity is the same formula
applied to the population means. Measured per (interval method, n_models, effect): how often the
95% interval covers the truth for one cell (ERK, CLS at 70%), for a row's OM_alloc and for the
finding's margin, and how often the finding gets each verdict; with ``effect = 0`` a 'holds' or
'fails' is a wrong verdict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..metrics import signed_quadratic_mean
from .allocation import allocation_table
from .evidence import interval
from .findings import check_finding
from .runs import RunSet, run_row
from .verdicts import FAILS, HOLDS, MIN_MODELS

FINDING = {
    "id": "sim",
    "kind": "order",
    "table": "table2",
    "column": "OM_alloc",
    "rows": ["FCPTS (ERK)", "ERK"],
}
BASE = {"cls": {0.5: 0.95, 0.7: 0.70}, "det": {0.5: 0.90, 0.7: 0.60}, "gen": {0.5: 0.60, 0.7: 0.30}}


@dataclass(frozen=True)
class Scenario:
    n_models: int
    effect: float = 0.0  # mean gain of FCPTS (ERK) over ERK in relative score, every task and rate
    sd_model: float = 0.10  # spread of models around the task's mean, per rate
    sd_effect: float = 0.03  # spread of the FCPTS gain across models
    sd_seed: float = 0.01  # calibration-seed noise of one model
    seeds: tuple[int, ...] = (0, 1)
    base: dict = field(default_factory=lambda: BASE)


def _record(task: str, model: str, alloc: str, rate: float, score: float, calib_seed: int, seeded: bool) -> dict:
    alloc_cfg = {"name": "fcpts", "init": "erk"} if alloc == "fcpts" else {"name": alloc}
    cfg = {
        "task": {"name": task, "metric": "m"},
        "model": {"name": model, "family": "sim"},
        "dataset": {"name": "sim"},
        "allocator": alloc_cfg,
        "reconstruction": {"name": "none"},
        "sparsity": {"rate": rate},
        "calib": {"seed": calib_seed},
        "seed": 0,
    }
    return {
        "status": "ok",
        "digest": f"{task}-{model}-{alloc}-{rate}-{calib_seed}",
        "config": cfg,
        "calibration": {"seed": calib_seed, "used": seeded},
        "model": {"name": model, "family": "sim", "size": model},
        "task": {"name": task, "metric": "m", "higher_is_better": True},
        "sparsity": {"target": rate},
        "dense": {"m": 1.0},
        "sparse": {"m": score},
    }


def template(scn: Scenario) -> pd.DataFrame:
    """One replicate's records (scores filled in later) through the real loader, with the indices
    of the draws each run reads."""
    recs, index = [], []
    for t, (task, means) in enumerate(scn.base.items()):
        for i in range(scn.n_models):
            for k, rate in enumerate(means):
                recs.append(_record(task, f"{task}{i}", "erk", rate, 0.0, 0, False))
                index.append((t, i, k, 0, -1))
                for j, s in enumerate(scn.seeds):
                    recs.append(_record(task, f"{task}{i}", "fcpts", rate, 0.0, s, True))
                    index.append((t, i, k, 1, j))
    frame = pd.DataFrame([run_row(r) for r in recs])
    return frame.assign(**dict(zip(["_t", "_m", "_k", "_fcpts", "_s"], np.array(index).T)))


def draw_scores(scn: Scenario, tmpl: pd.DataFrame, reps: int, rng: np.random.Generator) -> np.ndarray:
    """(reps, runs) relative scores of the template's runs."""
    n_tasks, n_rates = len(scn.base), len(next(iter(scn.base.values())))
    means = np.array([list(b.values()) for b in scn.base.values()])  # (tasks, rates)
    level = means[None, :, None, :] + scn.sd_model * rng.standard_normal((reps, n_tasks, scn.n_models, n_rates))
    gain = scn.effect + scn.sd_effect * rng.standard_normal((reps, n_tasks, scn.n_models))
    noise = scn.sd_seed * rng.standard_normal((reps, n_tasks, scn.n_models, n_rates, len(scn.seeds)))
    t, m, k, f, s = (tmpl[c].to_numpy() for c in ("_t", "_m", "_k", "_fcpts", "_s"))
    return level[:, t, m, k] + f * (gain[:, t, m] + noise[:, t, m, k, np.maximum(s, 0)])


def replicated_runs(scn: Scenario, reps: int, rng: np.random.Generator) -> pd.DataFrame:
    """``reps`` replicates as one run frame, replicate r's rows labelled '... #r'."""
    tmpl = template(scn)
    scores = draw_scores(scn, tmpl, reps, rng)
    big = tmpl.loc[np.tile(tmpl.index, reps)].reset_index(drop=True)
    tag = np.repeat([f" #{r}" for r in range(reps)], len(tmpl))
    return big.assign(
        allocator=big.allocator + tag, digest=big.digest + tag, rel=scores.ravel(), sparse=scores.ravel()
    ).drop(columns=["_t", "_m", "_k", "_fcpts", "_s"])


def truth(scn: Scenario) -> dict[str, float]:
    """cell: ERK, CLS at 70%; om: OM_alloc of FCPTS (ERK); margin: its OM_alloc minus ERK's (x100)."""

    def om(shift):
        return signed_quadratic_mean(
            [signed_quadratic_mean([m + shift for m in b.values()]) for b in scn.base.values()]
        )

    return {"cell": 100 * scn.base["cls"][0.7], "om": 100 * om(scn.effect), "margin": 100 * (om(scn.effect) - om(0.0))}


def _covers(ci: tuple[float, float], true: float) -> float:
    return math.nan if math.isnan(ci[0]) else float(ci[0] <= true <= ci[1])


def run_scenario(scn: Scenario, reps: int, kind: str, rng: np.random.Generator, min_models: int = MIN_MODELS) -> dict:
    """Coverage and verdict rates of ``reps`` replicates of one scenario."""
    table = allocation_table(RunSet(replicated_runs(scn, reps, rng)), kind=kind)
    true = truth(scn)
    out: dict[str, list] = {"cell": [], "om": [], "margin": [], "verdict": []}
    for r in range(reps):
        spec = {**FINDING, "rows": [f"{row} #{r}" for row in FINDING["rows"]]}
        verdict = check_finding(spec, {"table2": table}, None, min_models)
        out["cell"].append(_covers(interval(table.plan, table.est[(f"ERK #{r}", "CLS 70")]), true["cell"]))
        out["om"].append(_covers(interval(table.plan, table.est[(f"FCPTS (ERK) #{r}", "OM_alloc")]), true["om"]))
        out["margin"].append(_covers(verdict.ci, true["margin"]))
        out["verdict"].append(verdict.verdict)
    verdicts = np.array(out["verdict"])
    return {
        "cover_cell": np.nanmean(out["cell"]),
        "cover_om": np.nanmean(out["om"]),
        "cover_margin": np.nanmean(out["margin"]),
        "holds": float(np.mean(verdicts == HOLDS)),
        "fails": float(np.mean(verdicts == FAILS)),
    }


def simulate(
    n_models: list[int], effects: list[float], reps: int, kinds: list[str], seed: int = 0, min_models: int = MIN_MODELS
) -> pd.DataFrame:
    """One row per (interval method, n_models, effect): coverage of cell, OM and margin, verdict rates."""
    rows = []
    for kind in kinds:
        for n in n_models:
            for effect in effects:
                rng = np.random.default_rng([seed, n, round(1e4 * effect)])
                stats = run_scenario(Scenario(n, effect), reps, kind, rng, min_models)
                rows.append({"method": kind, "n_models": n, "effect": 100 * effect, **stats, "reps": reps})
    return pd.DataFrame(rows)
