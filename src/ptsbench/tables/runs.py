"""Run records -> one flat table of runs, de-duplicated by config digest (the tables' only input).

Every record JSON under a directory becomes one row with the coordinates the tracks group by
(task, model, family, size, dataset, allocator and method labels from their registries,
reconstruction knobs, rate, seeds), its relative score (docs/methods.md#track-metrics: A_s/A_dense,
or A_dense/A_s for lower-is-better metrics; with ``score="agreement"`` a classification run's top-1
agreement with the dense model), its knobs (every knob that can change a result:
``identity.is_neutral`` ones are left out) and the reconstruction units that diverged. Failed
runs stay in the frame (status 'failed', no score) so tables can name the gap; files that are not
run records, or not JSON, are counted and skipped, and a record of a schema version this code does
not know is refused by name; neither is fatal.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd

from ..identity import is_neutral
from ..metrics import relative_score
from ..records import SCHEMA_VERSION
from ..sparsity.allocators import ALLOCATORS
from .defaults import knob_defaults, non_default, option_file_defaults
from .labels import allocator_label, family_label, method_label

REPLICATE_KNOBS = ("seed", "calib.seed")  # what varies between replicates of one setting
# what a row's relative score ``rel`` is: "metric", the record's primary metric over the dense one;
# "agreement", for a classification run its sparse top-1 agreement with the dense model (the dense model
# agrees with itself: 1), a label-free score; the other tasks keep their metric
SCORES = ("metric", "agreement")
AGREEMENT_TASKS = ("cls",)  # the tasks whose records carry sparse.agreement


@dataclass
class RunSet:
    """All runs found under a records directory, plus what was skipped on the way."""

    runs: pd.DataFrame
    files: int = 0
    unreadable: list[str] = field(default_factory=list)
    duplicates: int = 0
    refused: list[str] = field(default_factory=list)  # records of an unknown schema version

    @property
    def ok(self) -> pd.DataFrame:
        return self.runs[self.runs.status == "ok"]

    @property
    def failed(self) -> pd.DataFrame:
        return self.runs[self.runs.status != "ok"]


def flat_knobs(cfg: dict, prefix: str = "") -> dict[str, str]:
    """Nested config -> {dotted.key: JSON value}, without the knobs that change no result."""
    out = {}
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        if is_neutral(key) or is_neutral(key + "."):
            continue
        if isinstance(v, dict):
            out.update(flat_knobs(v, key + "."))
        else:
            out[key] = json.dumps(v, sort_keys=True, default=str)
    return out


def _digest(knobs: dict[str, str], drop: tuple[str, ...]) -> str:
    kept = {k: v for k, v in knobs.items() if not any(k == d or k.startswith(d + ".") for d in drop)}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:20]


def _reads_calibration(rec: dict, alloc_name: str, recon: str) -> bool:
    """Whether a run's result depends on its calibration sample (newer records say so; older ones:
    a learned allocator, reconstruction, or a calibration-based mask criterion)."""
    used = (rec.get("calibration") or {}).get("used")
    if used is not None:
        return bool(used)
    cfg = rec.get("config") or {}
    sparsity_cfg = cfg.get("sparsity") or {}
    criterion = str(sparsity_cfg.get("criterion") or "magnitude")
    refined = str(sparsity_cfg.get("refine") or "none") != "none"
    learned = alloc_name in ALLOCATORS and ALLOCATORS.trait(alloc_name, "needs_calibration", False)
    return bool(learned or refined or recon != "none" or criterion not in ("magnitude", "None"))


def _as_bool(value):
    if value is None or isinstance(value, bool):
        return value
    return str(value).lower() in ("1", "true", "yes")


def _identity(rec: dict, path: str) -> dict:
    """Who the run is: model, task, dataset, allocator, seeds."""
    cfg, choices = rec.get("config") or {}, rec.get("choices") or {}
    model, task, alloc_cfg = rec.get("model") or {}, rec.get("task") or {}, cfg.get("allocator") or {}
    alloc_name = str(alloc_cfg.get("name", choices.get("allocator", "?")))
    family = str(model.get("family") or model.get("name") or "?")
    seed = rec.get("seed", cfg.get("seed"))
    calib_seed = (rec.get("calibration") or {}).get("seed", (cfg.get("calib") or {}).get("seed"))
    return {
        "digest": rec.get("digest"),
        "name": rec.get("name", Path(path).stem),
        "path": path,
        "created": rec.get("created", ""),
        "task": str(task.get("name", choices.get("task", "?"))),
        "metric": task.get("metric"),
        "higher_is_better": bool(task.get("higher_is_better", True)),
        "model": str(model.get("name", choices.get("model", "?"))),
        "family": family,
        "arch": family_label(family),
        "size": str(model.get("size")),
        "params": model.get("params"),
        "dataset": str(choices.get("dataset", (cfg.get("dataset") or {}).get("name", "?"))),
        "allocator": allocator_label(alloc_cfg, alloc_name),
        "allocator_name": alloc_name,
        "allocator_order": ALLOCATORS.order(alloc_name, alloc_cfg),
        "rate": float((rec.get("sparsity") or {}).get("target", math.nan)),
        "seed": seed,
        "calib_seed": calib_seed,
        "seed_key": f"{seed}/{calib_seed}",
        "calib": (rec.get("calibration") or {}).get("num_samples"),
    }


def _method(rec: dict, alloc_name: str) -> dict:
    """How the run sparsified: criterion, pattern, reconstruction, and its method-table row."""
    cfg, choices = rec.get("config") or {}, rec.get("choices") or {}
    recon_cfg, sparsity_cfg = cfg.get("reconstruction") or {}, cfg.get("sparsity") or {}
    recon = str(recon_cfg.get("name", choices.get("reconstruction", "none")))
    units = (rec.get("reconstruction") or {}).get("units") or []
    nm = sparsity_cfg.get("pattern", "unstructured") == "nm"
    return {
        "reconstruction": recon,
        "granularity": recon_cfg.get("granularity") or (recon if recon in ("single", "layer", "block") else None),
        "criterion": str(sparsity_cfg.get("criterion", "magnitude")),
        "pattern": str(sparsity_cfg.get("pattern", "unstructured")),
        "refine": str(sparsity_cfg.get("refine") or "none"),
        "input": recon_cfg.get("input") if recon != "none" else None,
        "error_correction": _as_bool(recon_cfg.get("error_correction")) if recon != "none" else None,
        "seed_free": not _reads_calibration(rec, alloc_name, recon),
        "units": len(units),
        "diverged_units": sum(bool(u.get("diverged")) for u in units if isinstance(u, dict)),
        "method": method_label(sparsity_cfg, recon_cfg),
        "nm_setting": f"{sparsity_cfg.get('n', 2)}:{sparsity_cfg.get('m', 4)}" if nm else None,
    }


def _result(rec: dict, score: str = "metric") -> dict:
    """What the run measured and cost; ``rel`` as ``score`` (one of SCORES) says."""
    task = rec.get("task") or {}
    metric, hib = task.get("metric"), bool(task.get("higher_is_better", True))
    dense: Any = (rec.get("dense") or {}).get(metric)
    sparse: Any = (rec.get("sparse") or {}).get(metric)
    ok = rec.get("status") == "ok" and dense is not None and sparse is not None
    err, timing, memory = rec.get("error") or {}, rec.get("timing") or {}, rec.get("memory") or {}
    error = f"{err.get('type', '')}: {err.get('message', '')}".strip(": ") if not ok else ""
    if ok and score == "agreement" and task.get("name") in AGREEMENT_TASKS:
        # the dense model agrees with itself: dense 1, sparse its agreement, so every table (Table 3's
        # gains too) reads the one score
        dense, sparse, hib = 1.0, (rec.get("sparse") or {}).get("agreement"), True
        ok = sparse is not None  # a record from before agreement was measured has no score: a gap
        error = "" if ok else "no sparse.agreement in the record (--score agreement); re-run it"
    return {
        "status": "ok" if ok else "failed",
        "error": error,
        "dense": float(dense) if ok else math.nan,
        "sparse": float(sparse) if ok else math.nan,
        "rel": relative_score(sparse, dense, hib) if ok else math.nan,
        "achieved": (rec.get("sparsity") or {}).get("achieved", math.nan),
        "time_s": timing.get("total"),
        "method_s": sum(float(timing.get(p, 0.0)) for p in METHOD_PHASES),
        "host_mb": memory.get("host_peak_mb", math.nan),
        "device_mb": memory.get("device_peak_mb", math.nan),
        **deploy_facts(rec),
    }


def deploy_facts(rec: dict) -> dict:
    """Size ratio (compressed / dense bytes), theoretical FLOP reduction and measured speed-up of one
    record; NaN / None where the record predates them or was not timed (``eval.latency``)."""
    size, flops, lat = rec.get("size_bytes") or {}, rec.get("flops") or {}, rec.get("latency") or {}
    return {
        "size_ratio": size["compressed"] / size["dense"] if size.get("dense") else math.nan,
        "flop_reduction": float(flops.get("reduction", math.nan)),
        "speedup": float(lat.get("speedup", math.nan)),
        "speed_device": lat.get("device_name") or lat.get("device"),
        "speed_backends": ",".join(sorted(b for b in (lat.get("backends") or {}) if b != "dense")) or None,
    }


# what a method costs: allocation, masks (SparseGPT: its selection and update too) and reconstruction
METHOD_PHASES = ("allocate", "mask", "select_update", "reconstruct")


@lru_cache(maxsize=4096)
def _knobs_and_setting(cfg_json: str) -> tuple[dict[str, str], dict[str, str]]:
    """(every knob that can change a result, those not at their option's default) of one config."""
    cfg = json.loads(cfg_json)
    knobs = flat_knobs(cfg)
    return knobs, non_default(knobs, knob_defaults(cfg))  # a knob at its default equals an absent one


@lru_cache(maxsize=512)
def _option_defaults(choices_json: str) -> dict[str, str]:
    return option_file_defaults(json.loads(choices_json))


def run_row(rec: dict, path: str = "", score: str = "metric") -> dict:
    """The flat row of one record (ok or failed); ``score``: what ``rel`` is (SCORES)."""
    cfg = rec.get("config") or {}
    ident = _identity(rec, path)
    knobs, setting = _knobs_and_setting(json.dumps(cfg, sort_keys=True, default=str))
    allocation = rec.get("allocation") or {}
    return {
        **ident,
        **_method(rec, ident["allocator_name"]),
        **_result(rec, score),
        "baseline_key": _digest(setting, ("reconstruction",)),
        "baseline_key_seedless": _digest(setting, ("reconstruction", *REPLICATE_KNOBS)),
        "per_layer": (rec.get("sparsity") or {}).get("target_per_layer"),
        "init_per_layer": allocation.get("init_rates"),
        "knobs": dict(knobs),
        "setting": dict(setting),
        "option_defaults": _option_defaults(json.dumps(rec.get("choices") or {}, sort_keys=True)),
    }


def _read(path: Path) -> tuple[dict | None, str | None, str | None]:
    """(record, unreadable reason, refusal) of one JSON file."""
    try:
        rec = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None, str(path), None
    if not isinstance(rec, dict) or "digest" not in rec or "status" not in rec:
        return None, str(path), None  # e.g. a dense-metric cache file, not a run record
    version = rec.get("schema_version")
    if version != SCHEMA_VERSION:
        return (
            None,
            None,
            (
                f"{path}: record schema_version {version!r} is not one this ptsbench reads ({SCHEMA_VERSION}); "
                "aggregate it with the ptsbench version that wrote it"
            ),
        )
    return rec, None, None


def load_runs(records_dir: str | Path, score: str = "metric") -> RunSet:
    """Read every ``*.json`` under ``records_dir``; keep one row per config digest (the newest
    ``ok`` record wins over failed ones and over older copies). ``score`` (one of SCORES) is what each
    row's relative score ``rel`` is: the primary metric over the dense one, or for classification runs
    their top-1 agreement with the dense model."""
    if score not in SCORES:
        raise ValueError(f"score {score!r} is not one of the valid choices: {', '.join(SCORES)}")
    rows, unreadable, refused = [], [], []
    files = sorted(Path(records_dir).rglob("*.json"))
    for p in files:
        rec, bad, refusal = _read(p)
        if rec is None:
            unreadable += [bad] if bad else []
            refused += [refusal] if refusal else []
            continue
        try:
            rows.append(run_row(rec, str(p), score))
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
    return RunSet(runs, len(files), unreadable, n - len(runs), refused)
