"""Aggregation of run records into the five track tables (SPEC §5), on a synthetic record set
with a failed run, duplicates, a missing cell, an absent task cell and a run without baseline."""
from __future__ import annotations

import hashlib
import json
import math
import sys
import types
from pathlib import Path

import pandas as pd
import pytest

from ptsbench.aggregate import aggregate, main
from ptsbench.record import record_filename, write_json_atomic
from ptsbench.tables import build_tables, load_runs
from ptsbench.tables.reconstruction import paired_gains

MODELS = {"m_a": ("resnet", "18", 1_000_000, 0.8), "m_b": ("resnet", "50", 2_000_000, 0.5),
          "m_c": ("vit", "b16", 3_000_000, 0.9)}


def make_record(model="m_a", alloc="l2norm", rate=0.5, rel=None, *, task="cls", metric="top1", hib=True,
                dense=None, sparse=None, init=None, recon="none", inp=None, ec=None, status="ok", calib=1024,
                created="2026-01-02T00:00:00+00:00", dataset="ds"):
    family, size, params, model_dense = MODELS.get(model, ("retinanet", "r18", 5_000_000, 0.4))
    dense = model_dense if dense is None else dense
    if sparse is None and rel is not None:
        sparse = rel * dense if hib else dense / rel
    alloc_cfg = {"name": alloc, **({"init": init} if init else {})}
    recon_cfg = {"name": recon} if recon == "none" else {"name": recon, "input": inp, "error_correction": ec}
    cfg = {"task": {"name": task, "metric": metric}, "model": {"name": model, "family": family, "size": size},
           "dataset": {"name": dataset}, "allocator": alloc_cfg, "reconstruction": recon_cfg,
           "sparsity": {"rate": rate}, "calib": {"num_samples": calib}, "seed": 0, "paths": {"output_dir": "x"}}
    digest = hashlib.sha256(json.dumps({k: v for k, v in cfg.items() if k != "paths"}, sort_keys=True).encode()).hexdigest()
    choices = {"task": task, "model": model, "dataset": dataset, "allocator": alloc, "reconstruction": recon}
    rec = {"schema_version": 1, "status": status, "digest": digest, "name": record_filename(choices, rate, digest)[:-5],
           "created": created, "choices": choices, "config": cfg, "seed": 0,
           "calibration": {"num_samples": calib, "seed": 0, "indices_digest": "x"},
           "model": {"name": model, "family": family, "size": size, "params": params},
           "task": {"name": task, "metric": metric, "higher_is_better": hib},
           "sparsity": {"target": rate, "target_per_layer": {"conv1": rate / 2, "fc": rate}},
           "timing": {"total": 1.0}, "memory": {}, "env": {}}
    if status == "ok":
        rec["dense"], rec["sparse"] = {metric: dense}, {metric: sparse}
        rec["error"] = None
    else:
        rec["error"] = {"type": "RuntimeError", "message": "CUDA out of memory", "phase": "reconstruct"}
    return rec


def synthetic_records() -> list[dict]:
    recs = []
    rels = {"uniform": {0.5: 0.5, 0.8: {"m_a": 0.25, "m_b": 0.2}},
            "l2norm": {0.5: 0.9, 0.8: 0.5}, "fcpts": {0.5: 1.0, 0.8: 0.8}}
    for alloc, by_rate in rels.items():
        for rate, rel in by_rate.items():
            for model in MODELS:
                r = rel.get(model) if isinstance(rel, dict) else rel
                if r is None:
                    continue  # the missing cell: Uniform, m_c, 0.8
                if (alloc, model, rate) == ("l2norm", "m_b", 0.8):
                    recs.append(make_record(model, alloc, rate, status="failed"))
                    continue
                recs.append(make_record(model, alloc, rate, r, init="erk" if alloc == "fcpts" else None))
    # detection (map, higher is better) at 0.5 only, no FCPTS run; generation (FID, lower is better)
    recs += [make_record("retina", "uniform", 0.5, 0.5, task="det", metric="map"),
             make_record("retina", "l2norm", 0.5, 0.9, task="det", metric="map")]
    recs += [make_record("ldm", a, 0.5, task="gen", metric="fid_digits", hib=False, dense=10.0, sparse=s,
                         init="erk" if a == "fcpts" else None)
             for a, s in (("uniform", 40.0), ("l2norm", 20.0), ("fcpts", 12.5))]
    # reconstruction: a full factorial layer/block x sparse/dense x EC on (m_a, L2Norm, 0.5): baseline 0.72
    gains = {("layer", "sparse", False): .05, ("layer", "sparse", True): .10, ("layer", "dense", False): .01,
             ("layer", "dense", True): .02, ("block", "sparse", False): .08, ("block", "sparse", True): .12,
             ("block", "dense", False): .04, ("block", "dense", True): .06}
    for (gran, inp, ec), g in gains.items():
        recs.append(make_record("m_a", "l2norm", 0.5, sparse=0.72 + 0.8 * g, recon=gran, inp=inp, ec=ec))
    # a reconstructed run whose no-reconstruction twin failed
    recs.append(make_record("m_b", "l2norm", 0.8, sparse=0.3, recon="block", inp="sparse", ec=False))
    return recs


@pytest.fixture
def records_dir(tmp_path):
    d = tmp_path / "records"
    recs = synthetic_records()
    for rec in recs:
        write_json_atomic(d / f"{rec['name']}.json", rec)
    # duplicates: an older copy of an ok record, and an older failed record of an ok digest
    dup = dict(recs[0], created="2025-01-01T00:00:00+00:00")
    write_json_atomic(d / "copied" / f"{dup['name']}.json", dup)
    stale = next(r for r in recs if r["config"]["allocator"].get("init") and r["model"]["name"] == "m_a")
    stale = {**stale, "status": "failed", "created": "2025-01-01T00:00:00+00:00",
             "error": {"type": "KeyboardInterrupt", "message": "", "phase": "allocate"}}
    stale.pop("sparse")
    write_json_atomic(d / "old" / f"{stale['name']}.json", stale)
    (d / "dense-cache.json").write_text(json.dumps({"top1": 0.9}))   # not a run record
    (d / "broken.json").write_text("{not json")
    return d


def qm(*v):
    return math.sqrt(sum(x * x for x in v) / len(v))


def test_runs_are_deduplicated_and_junk_is_counted(records_dir):
    rs = load_runs(records_dir)
    assert rs.files == len(synthetic_records()) + 4
    assert rs.duplicates == 2 and len(rs.unreadable) == 2
    assert len(rs.runs) == len(synthetic_records())
    assert len(rs.failed) == 1 and rs.failed.iloc[0]["model"] == "m_b"
    assert set(rs.ok.allocator) == {"Uniform", "L2Norm", "FCPTS (ERK)"}


def test_table2_values_flags_and_gaps(records_dir):
    (t2, *_), _ = build_tables(load_runs(records_dir))
    v, f = t2.values, t2.flags
    assert list(v.index) == ["Uniform", "L2Norm", "FCPTS (ERK)"]
    assert list(v.columns) == ["CLS 50", "CLS 80", "CLS MS", "DET 50", "DET MS", "GEN 50", "GEN MS", "OM_alloc"]
    assert v.at["Uniform", "CLS 50"] == pytest.approx(50.0)
    assert v.at["Uniform", "CLS 80"] == pytest.approx(22.5) and f.at["Uniform", "CLS 80"] == "*"   # m_c missing
    assert v.at["L2Norm", "CLS 80"] == pytest.approx(50.0) and f.at["L2Norm", "CLS 80"] == "*"     # m_b failed
    assert v.at["L2Norm", "CLS MS"] == pytest.approx(100 * qm(0.9, 0.5))
    assert v.at["L2Norm", "GEN 50"] == pytest.approx(50.0)                # FID 10 -> 20: A_dense / A_s
    assert math.isnan(v.at["FCPTS (ERK)", "DET MS"]) and f.at["FCPTS (ERK)", "CLS 50"] == ""
    assert v.at["Uniform", "OM_alloc"] == pytest.approx(100 * qm(qm(0.5, 0.225), 0.5, 0.25))
    assert v.at["FCPTS (ERK)", "OM_alloc"] == pytest.approx(100 * qm(qm(1.0, 0.8), 0.8))      # no DET: 2 tasks
    kinds = sorted((g["kind"], g["allocator"], g["task"], g["model"], g["rate"]) for g in t2.gaps)
    assert kinds == [("failed", "L2Norm", "cls", "m_b", 0.8), ("missing", "FCPTS (ERK)", "det", "retina", 0.5),
                     ("missing", "Uniform", "cls", "m_c", 0.8)]


def test_table3_pairs_each_run_with_its_none_twin(records_dir):
    (_, t3, *_), _ = build_tables(load_runs(records_dir))
    v = t3.values
    expected = {"w/ Correction": 7.5, "w/o Correction": 4.5, "Sparse Input": 8.75, "Dense Input": 3.25,
                "Layer-wise": 4.5, "Block-wise": 7.5}
    for row, cell in expected.items():
        assert v.at[row, "CLS 50"] == pytest.approx(cell)
        assert v.at[row, "OM_recon"] == pytest.approx(cell)          # one rate, one task
    assert math.isnan(v.at["Single", "CLS 50"])                       # no single-layer runs: a gap row
    assert [g["kind"] for g in t3.gaps] == ["no-baseline"] and t3.gaps[0]["model"] == "m_b"


def test_twin_with_other_calibration_matches_loosely(tmp_path):
    base = make_record("m_a", "l2norm", 0.5, 0.9, calib=1024)
    recon = make_record("m_a", "l2norm", 0.5, sparse=0.8, recon="block", inp="sparse", ec=False, calib=256)
    rs = load_runs_from([base, recon], tmp_path)
    runs, gaps, n_loose = paired_gains(rs)
    assert n_loose == 1 and not gaps and runs.gain.iloc[0] == pytest.approx((0.8 - 0.72) / 0.8)


def load_runs_from(recs, tmp: Path):
    d = tmp / "recs"
    for r in recs:
        write_json_atomic(d / f"{r['name']}.json", r)
    return load_runs(d)


def test_tables_6_4_5_by_hand(records_dir):
    (_, _, t6, t4, t5), sizes = build_tables(load_runs(records_dir))
    resnet, vit = ("ds", "ResNet"), ("ds", "ViT")
    assert t6.values.at[resnet, "50"] == pytest.approx(90.0)
    assert t6.values.at[resnet, "80"] == pytest.approx(50.0) and t6.flags.at[resnet, "80"] == "*"
    assert t6.values.at[resnet, "OM_arch"] == pytest.approx(100 * qm(0.9, 0.5))
    g18, g50 = 100 * qm(0.9, 0.5), 90.0                            # size 50 has only its 0.5 run
    assert t6.values.at[resnet, "OM_robust"] == pytest.approx(abs(g18 - g50) / 2)
    assert math.isnan(t6.values.at[vit, "OM_robust"])             # a single size has no spread
    assert sorted(sizes["size"]) == ["18", "50", "b16"] and sizes.params.max() == 3_000_000
    assert list(t4.values.index) == ["CLS", "DET", "GEN"]
    assert t4.values.at["CLS", "80"] == pytest.approx(50.0) and t4.flags.at["CLS", "80"] == "*"
    assert t4.values.at["DET", "50"] == pytest.approx(90.0) and math.isnan(t4.values.at["DET", "80"])
    assert t4.values.at["GEN", "OM_task"] == pytest.approx(50.0)
    ranking = t5.values.iloc[:, 0]
    assert ranking["Sparsity allocation (OM_alloc)"].startswith("FCPTS (ERK)")
    assert ranking["Sparsity allocation (OM_alloc)"].endswith(f"Uniform ({t5.csv_frame.score.iloc[2]:.2f})")
    assert ranking["Reconstruction: input (OM_recon)"] == "Sparse Input (8.75), Dense Input (3.25)"
    assert ranking["Model size robustness (OM_robust, lower is better)"].startswith("ResNet")
    assert ranking["Different tasks (OM_task)"].startswith("DET (90.00)")


def test_cli_writes_every_format_and_plots(records_dir, tmp_path, capsys, monkeypatch):
    calls = []
    fake = types.ModuleType("ptsbench.plots.allocation")
    fake.plot_layer_allocation = lambda rates, title, path: (calls.append((rates, title)), Path(path).write_bytes(b"png"))
    monkeypatch.setitem(sys.modules, "ptsbench.plots.allocation", fake)
    out = tmp_path / "tables"
    assert main([str(records_dir), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for title in ("Table 2", "Table 3", "Table 6", "Table 4", "Table 5"):
        assert f"### {title}:" in printed
    assert "| L2Norm | 90.00 | 50.00* |" in printed and "| fail |" not in printed.split("### Gaps")[0]
    for stem in ("table2_allocation", "table3_reconstruction", "table6_architecture", "table4_tasks", "table5_ranking"):
        for ext in ("md", "csv", "tex"):
            assert (out / f"{stem}.{ext}").stat().st_size > 0
    assert r"\textbf{100.00}" in (out / "table2_allocation.tex").read_text()
    t2 = pd.read_csv(out / "table2_allocation.csv", index_col=0)
    assert t2.at["L2Norm", "CLS 50"] == pytest.approx(90.0) and math.isnan(t2.at["FCPTS (ERK)", "DET MS"])
    gaps = pd.read_csv(out / "gaps.csv")
    # the failed L2Norm run is a gap of Tables 2, 6 and 4; DET/GEN lack rate 0.8 in Table 4
    assert sorted(gaps.kind) == ["failed"] * 3 + ["missing"] * 4 + ["no-baseline"]
    assert "CUDA out of memory" in (out / "gaps.md").read_text()
    for png in ("fig5_size_loss.png", "rate_curves_by_allocator.png"):
        assert (out / "plots" / png).read_bytes()[:4] == b"\x89PNG"
    # Fig. 4 hook: ResNet-18 at its highest rate with >= 2 allocators (0.8: Uniform, FCPTS (ERK); L2Norm's failed)
    titles = {t for _, t in calls}
    assert "m_a on ds, sparsity 80%" in titles
    rates = next(r for r, t in calls if t == "m_a on ds, sparsity 80%")
    assert set(rates) == {"Uniform", "L2Norm", "FCPTS (ERK)"} and rates["Uniform"] == {"conv1": 0.4, "fc": 0.8}
    assert main([str(records_dir), "--out", str(out), "--no-plots", "--strict"]) == 3


def test_failed_only_cell_is_marked_fail(tmp_path):
    recs = [make_record("m_a", "uniform", 0.5, 0.5), make_record("m_a", "erk", 0.5, status="failed")]
    rs = load_runs_from(recs, tmp_path)
    (t2, *_), _ = build_tables(rs)
    assert t2.flags.at["ERK", "CLS 50"] == "fail" and math.isnan(t2.values.at["ERK", "CLS 50"])
    summary = aggregate(rs_dir(rs), None, echo=lambda s: None)
    assert summary["failed"] == 1 and summary["gaps"] == 1


def rs_dir(rs):
    return Path(rs.runs.path.iloc[0]).parent


def test_empty_directory_reports_and_exits_1(tmp_path, capsys):
    (tmp_path / "records").mkdir()
    assert main([str(tmp_path / "records"), "--out", str(tmp_path / "t")]) == 1
    assert "no run records" in capsys.readouterr().out
    assert main([str(tmp_path / "nope")]) == 2
