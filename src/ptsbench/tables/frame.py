"""Run records -> one flat table of runs, de-duplicated by config digest.

Every record JSON under a directory becomes one row with the coordinates the tracks group by
(task, model, family, size, dataset, allocator label, reconstruction knobs, rate, seed) and
its relative score (docs/methods.md#track-metrics: A_s/A_dense, or A_dense/A_s for lower-is-better metrics).
Failed runs stay in the frame (status 'failed', no score) so tables can name the gap; files
that are not run records, or not JSON, are counted and skipped, never fatal.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..identity import digest_excluded
from ..metrics import relative_score
from ..models.adapters import ADAPTERS
from ..sparsity.allocators import ALLOCATORS

TASK_ORDER = ("cls", "det", "gen")  # the paper's three tasks; always shown, as gaps when absent


@dataclass
class RunSet:
    """All runs found under a records directory, plus what was skipped on the way."""

    runs: pd.DataFrame
    files: int = 0
    unreadable: list[str] = field(default_factory=list)
    duplicates: int = 0

    @property
    def ok(self) -> pd.DataFrame:
        return self.runs[self.runs.status == "ok"]

    @property
    def failed(self) -> pd.DataFrame:
        return self.runs[self.runs.status != "ok"]


def allocator_label(alloc_cfg: dict | None, name: str) -> str:
    """Display name of an allocator row, from its registry entry: 'ERK', 'FCPTS (ERK)', ...

    Read from the resolved config (``allocator.name`` + its knobs), so records whose Hydra
    choice is the group option (``fcpts_erk``) and older ones (``fcpts`` + ``init``) agree."""
    return ALLOCATORS.label(name, alloc_cfg or {})


def family_label(family: str) -> str:
    return ADAPTERS.label(family)


def flat_knobs(cfg: dict, prefix: str = "") -> dict[str, str]:
    """Nested config -> {dotted.key: JSON value}, the semantic keys only (what a comparison matches on)."""
    out = {}
    for k, v in cfg.items():
        if not prefix and digest_excluded(k):
            continue
        if isinstance(v, dict):
            out.update(flat_knobs(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = json.dumps(v, sort_keys=True, default=str)
    return out


def task_label(task: str) -> str:
    return str(task).upper()


def ordered_tasks(present) -> list[str]:
    present = [t for t in present if t is not None]
    return list(TASK_ORDER) + sorted(t for t in set(present) if t not in TASK_ORDER)


def _baseline_key(cfg: dict) -> str:
    """Digest of the config minus the reconstruction subtree: a reconstructed run and its
    reconstruction=none twin share it exactly when nothing else differs."""
    rest = {k: v for k, v in cfg.items() if not digest_excluded(k) and k != "reconstruction"}
    return hashlib.sha256(json.dumps(rest, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _baseline_key_seedless(cfg: dict) -> str:
    """_baseline_key without the seeds: how a reconstructed run finds a none twin that read no
    calibration data (its result is the same for every seed)."""
    rest = {k: v for k, v in cfg.items() if not digest_excluded(k) and k not in ("reconstruction", "seed")}
    rest["calib"] = {k: v for k, v in (cfg.get("calib") or {}).items() if k != "seed"}
    return hashlib.sha256(json.dumps(rest, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _reads_calibration(rec: dict, alloc_name: str, recon: str) -> bool:
    """Whether a run's result depends on its calibration sample (records say so since issue 13;
    older ones: a learned allocator, reconstruction, or a calibration-based mask criterion)."""
    used = (rec.get("calibration") or {}).get("used")
    if used is not None:
        return bool(used)
    cfg = rec.get("config") or {}
    criterion = str((cfg.get("sparsity") or {}).get("criterion") or "magnitude")
    learned = alloc_name in ALLOCATORS and ALLOCATORS.trait(alloc_name, "needs_calibration", False)
    return bool(learned or recon != "none" or criterion not in ("magnitude", "None"))


def _as_bool(value):
    if value is None or isinstance(value, bool):
        return value
    return str(value).lower() in ("1", "true", "yes")


def run_row(rec: dict, path: str = "") -> dict:
    """The flat row of one record (ok or failed)."""
    cfg = rec.get("config") or {}
    choices = rec.get("choices") or {}
    model = rec.get("model") or {}
    task = rec.get("task") or {}
    metric = task.get("metric")
    hib = bool(task.get("higher_is_better", True))
    recon_cfg = cfg.get("reconstruction") or {}
    recon = str(recon_cfg.get("name", choices.get("reconstruction", "none")))
    granularity = recon_cfg.get("granularity") or (recon if recon in ("single", "layer", "block") else None)
    alloc_cfg = cfg.get("allocator") or {}
    sparsity_cfg = cfg.get("sparsity") or {}
    alloc_name = str(alloc_cfg.get("name", choices.get("allocator", "?")))
    dense = (rec.get("dense") or {}).get(metric)
    sparse = (rec.get("sparse") or {}).get(metric)
    ok = rec.get("status") == "ok" and dense is not None and sparse is not None
    seed = rec.get("seed", cfg.get("seed"))
    calib_seed = (rec.get("calibration") or {}).get("seed", (cfg.get("calib") or {}).get("seed"))
    allocation = rec.get("allocation") or {}
    err = rec.get("error") or {}
    return {
        "digest": rec.get("digest"),
        "name": rec.get("name", Path(path).stem),
        "path": path,
        "status": "ok" if ok else "failed",
        "created": rec.get("created", ""),
        "error": f"{err.get('type', '')}: {err.get('message', '')}".strip(": ") if not ok else "",
        "task": str(task.get("name", choices.get("task", "?"))),
        "metric": metric,
        "higher_is_better": hib,
        "model": str(model.get("name", choices.get("model", "?"))),
        "family": str(model.get("family") or model.get("name") or "?"),
        "arch": family_label(str(model.get("family") or model.get("name") or "?")),
        "size": str(model.get("size")),
        "params": model.get("params"),
        "dataset": str(choices.get("dataset", (cfg.get("dataset") or {}).get("name", "?"))),
        "allocator": allocator_label(alloc_cfg, alloc_name),
        "allocator_name": alloc_name,
        "allocator_order": ALLOCATORS.order(alloc_name, alloc_cfg),
        "reconstruction": recon,
        "granularity": granularity,
        "criterion": str(sparsity_cfg.get("criterion", "magnitude")),
        "pattern": str(sparsity_cfg.get("pattern", "unstructured")),
        "input": recon_cfg.get("input") if recon != "none" else None,
        "error_correction": _as_bool(recon_cfg.get("error_correction")) if recon != "none" else None,
        "rate": float((rec.get("sparsity") or {}).get("target", math.nan)),
        "seed": seed,
        "calib_seed": calib_seed,
        "seed_key": f"{seed}/{calib_seed}",
        "seed_free": not _reads_calibration(rec, alloc_name, recon),
        "calib": (rec.get("calibration") or {}).get("num_samples"),
        "dense": float(dense) if ok else math.nan,
        "sparse": float(sparse) if ok else math.nan,
        "rel": relative_score(sparse, dense, hib) if ok else math.nan,
        "baseline_key": _baseline_key(cfg),
        "baseline_key_seedless": _baseline_key_seedless(cfg),
        "per_layer": (rec.get("sparsity") or {}).get("target_per_layer"),
        "init_per_layer": allocation.get("init_rates"),
        "knobs": flat_knobs(cfg),
        "time_s": (rec.get("timing") or {}).get("total"),
    }


def load_runs(records_dir: str | Path) -> RunSet:
    """Read every ``*.json`` under ``records_dir``; keep one row per config digest (the newest
    ``ok`` record wins over failed ones and over older copies)."""
    rows, unreadable = [], []
    files = sorted(Path(records_dir).rglob("*.json"))
    for p in files:
        try:
            rec = json.loads(p.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            unreadable.append(str(p))
            continue
        if not isinstance(rec, dict) or "digest" not in rec or "status" not in rec:
            unreadable.append(str(p))  # e.g. a dense-metric cache file, not a run record
            continue
        try:
            rows.append(run_row(rec, str(p)))
        except (TypeError, ValueError, AttributeError) as e:
            unreadable.append(f"{p} ({type(e).__name__}: {e})")
    runs = pd.DataFrame(rows, columns=list(run_row({"digest": "", "status": "failed"}).keys()))
    n = len(runs)
    if n:
        runs = (
            runs.assign(_ok=runs.status == "ok")
            .sort_values(["_ok", "created"], ascending=[False, False], kind="stable")
            .drop_duplicates("digest")
            .drop(columns="_ok")
            .sort_values(["task", "model", "allocator", "reconstruction", "rate"], kind="stable")
            .reset_index(drop=True)
        )
    return RunSet(runs=runs, files=len(files), unreadable=unreadable, duplicates=n - len(runs))
