"""Aggregation of run records into the five track tables (docs/methods.md#track-metrics), on a synthetic record set
with a failed run, duplicates, a missing cell, an absent task cell and a run without baseline."""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ptsbench.aggregate import aggregate, main
from ptsbench.identity import record_filename
from ptsbench.records import write_json_atomic
from ptsbench.tables import build_tables, load_runs
from ptsbench.tables.reconstruction import paired_gains

MODELS = {
    "m_a": ("resnet", "18", 1_000_000, 0.8),
    "m_b": ("resnet", "50", 2_000_000, 0.5),
    "m_c": ("vit", "b16", 3_000_000, 0.9),
}

HARD = {"m_h": ("resnet", "34", 1_500_000, 0.8)}  # the hard model of flip_records()


def make_record(
    model="m_a",
    alloc="l2norm",
    rate=0.5,
    rel=None,
    *,
    task="cls",
    metric="top1",
    hib=True,
    dense=None,
    sparse=None,
    init=None,
    recon="none",
    inp=None,
    ec=None,
    status="ok",
    calib=1024,
    created="2026-01-02T00:00:00+00:00",
    dataset="ds",
    seed=0,
    calib_seed=0,
    used=None,
):
    family, size, params, model_dense = {**MODELS, **HARD}.get(model, ("retinanet", "r18", 5_000_000, 0.4))
    dense = model_dense if dense is None else dense
    if sparse is None and rel is not None:
        sparse = rel * dense if hib else dense / rel
    alloc_cfg = {"name": alloc, **({"init": init} if init else {})}
    recon_cfg = {"name": recon} if recon == "none" else {"name": recon, "input": inp, "error_correction": ec}
    cfg = {
        "task": {"name": task, "metric": metric},
        "model": {"name": model, "family": family, "size": size},
        "dataset": {"name": dataset},
        "allocator": alloc_cfg,
        "reconstruction": recon_cfg,
        "sparsity": {"rate": rate},
        "calib": {"num_samples": calib, "seed": calib_seed},
        "seed": seed,
        "paths": {"output_dir": "x"},
    }
    digest = hashlib.sha256(
        json.dumps({k: v for k, v in cfg.items() if k != "paths"}, sort_keys=True).encode()
    ).hexdigest()
    choices = {"task": task, "model": model, "dataset": dataset, "allocator": alloc, "reconstruction": recon}
    rec = {
        "schema_version": 1,
        "status": status,
        "digest": digest,
        "name": record_filename(choices, rate, digest)[:-5],
        "created": created,
        "choices": choices,
        "config": cfg,
        "seed": seed,
        "calibration": {
            "num_samples": calib,
            "seed": calib_seed,
            "indices_digest": "x",
            **({} if used is None else {"used": used}),
        },
        "model": {"name": model, "family": family, "size": size, "params": params},
        "task": {"name": task, "metric": metric, "higher_is_better": hib},
        "sparsity": {"target": rate, "target_per_layer": {"conv1": rate / 2, "fc": rate}},
        "timing": {"total": 1.0},
        "memory": {},
        "env": {},
    }
    if status == "ok":
        rec["dense"], rec["sparse"] = {metric: dense}, {metric: sparse}
        rec["error"] = None
    else:
        rec["error"] = {"type": "RuntimeError", "message": "CUDA out of memory", "phase": "reconstruct"}
    return rec


def synthetic_records() -> list[dict]:
    recs = []
    rels = {
        "uniform": {0.5: 0.5, 0.8: {"m_a": 0.25, "m_b": 0.2}},
        "l2norm": {0.5: 0.9, 0.8: 0.5},
        "fcpts": {0.5: 1.0, 0.8: 0.8},
    }
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
    recs += [
        make_record("retina", "uniform", 0.5, 0.5, task="det", metric="map"),
        make_record("retina", "l2norm", 0.5, 0.9, task="det", metric="map"),
    ]
    recs += [
        make_record(
            "ldm",
            a,
            0.5,
            task="gen",
            metric="fid_digits",
            hib=False,
            dense=10.0,
            sparse=s,
            init="erk" if a == "fcpts" else None,
        )
        for a, s in (("uniform", 40.0), ("l2norm", 20.0), ("fcpts", 12.5))
    ]
    # reconstruction: a full factorial layer/block x sparse/dense x EC on (m_a, L2Norm, 0.5): baseline 0.72
    gains = {
        ("layer", "sparse", False): 0.05,
        ("layer", "sparse", True): 0.10,
        ("layer", "dense", False): 0.01,
        ("layer", "dense", True): 0.02,
        ("block", "sparse", False): 0.08,
        ("block", "sparse", True): 0.12,
        ("block", "dense", False): 0.04,
        ("block", "dense", True): 0.06,
    }
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
    stale = {
        **stale,
        "status": "failed",
        "created": "2025-01-01T00:00:00+00:00",
        "error": {"type": "KeyboardInterrupt", "message": "", "phase": "allocate"},
    }
    stale.pop("sparse")
    write_json_atomic(d / "old" / f"{stale['name']}.json", stale)
    (d / "dense-cache.json").write_text(json.dumps({"top1": 0.9}))  # not a run record
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
    # matched: at 0.8 only m_a has a run in every row (Uniform lacks m_c, L2Norm's m_b failed)
    assert v.at["Uniform", "CLS 80"] == pytest.approx(25.0) and f.at["Uniform", "CLS 80"] == ""
    assert v.at["L2Norm", "CLS 80"] == pytest.approx(50.0) and v.at["FCPTS (ERK)", "CLS 80"] == pytest.approx(80.0)
    assert v.at["L2Norm", "CLS MS"] == pytest.approx(100 * qm(0.9, 0.5))
    assert v.at["L2Norm", "GEN 50"] == pytest.approx(50.0)  # FID 10 -> 20: A_dense / A_s
    assert math.isnan(v.at["FCPTS (ERK)", "DET MS"]) and not (f == "*").any().any()
    # FCPTS has no DET run, so every row's OM_alloc is over CLS and GEN (a note says so)
    assert v.at["Uniform", "OM_alloc"] == pytest.approx(100 * qm(qm(0.5, 0.25), 0.25))
    assert v.at["FCPTS (ERK)", "OM_alloc"] == pytest.approx(100 * qm(qm(1.0, 0.8), 0.8))
    assert any("OM_alloc over CLS, GEN only" in n for n in t2.notes)
    # every knob these records hold fixed is at its default: the footnote says so, held_fixed.csv lists them
    assert "held fixed: every other knob at its default (full list in held_fixed.csv)" in t2.notes
    fixed = {f["knob"]: f for f in t2.fixed}
    assert fixed["reconstruction.name"]["value"] == '"none"' and fixed["reconstruction.name"]["at_default"]
    kinds = sorted((g["kind"], g["allocator"], g["task"], g["model"], g["rate"]) for g in t2.gaps)
    assert kinds == [
        ("failed", "L2Norm", "cls", "m_b", 0.8),
        ("missing", "FCPTS (ERK)", "det", "retina", 0.5),
        ("missing", "Uniform", "cls", "m_c", 0.8),
    ]
    cells = {(c["row"], c["column"]): c for c in t2.cells}
    assert cells[("Uniform", "CLS 80")]["n_models"] == 1 and cells[("Uniform", "CLS 80")]["models"] == "m_a"
    assert math.isnan(cells[("Uniform", "CLS 80")]["ci_low"])  # one model: no interval
    assert cells[("L2Norm", "CLS 50")]["n_models"] == 3 and cells[("L2Norm", "CLS 50")]["models"] == "m_a;m_b;m_c"


def test_table2_unmatched_keeps_every_run_and_stars_short_cells(records_dir):
    (t2, *_, t5), _ = build_tables(load_runs(records_dir), matched=False)
    v, f = t2.values, t2.flags
    assert v.at["Uniform", "CLS 80"] == pytest.approx(22.5) and f.at["Uniform", "CLS 80"] == "*"  # m_c missing
    assert v.at["L2Norm", "CLS 80"] == pytest.approx(50.0) and f.at["L2Norm", "CLS 80"] == "*"  # m_b failed
    assert v.at["Uniform", "OM_alloc"] == pytest.approx(100 * qm(qm(0.5, 0.225), 0.5, 0.25))
    assert v.at["FCPTS (ERK)", "OM_alloc"] == pytest.approx(100 * qm(qm(1.0, 0.8), 0.8))  # no DET: 2 tasks
    # every row lacks some cell here, so Table 5 ranks none of them
    assert t2.unranked == {"Uniform", "L2Norm", "FCPTS (ERK)"}
    assert (
        t5.values.iloc[:, 0]["Sparsity allocation (OM_alloc)"] != t5.values.iloc[:, 0]["Sparsity allocation (OM_alloc)"]
    )
    assert any("not ranked" in n and "FCPTS (ERK)" in n for n in t5.notes)


def flip_records() -> list[dict]:
    """ERK on an easy and a hard model, FCPTS only on the easy one: pooled, FCPTS looks best."""
    recs = []
    for seed in (0, 1):
        for rate in (0.7, 0.8):
            recs.append(make_record("m_a", "erk", rate, 0.95 - 0.01 * seed, seed=seed))
            recs.append(make_record("m_h", "erk", rate, 0.30 + 0.01 * seed, seed=seed))
            recs.append(make_record("m_a", "fcpts", rate, 0.90 - 0.01 * seed, init="erk", seed=seed))
    return recs


def test_matched_tables_do_not_flip_a_ranking_that_pooling_would(tmp_path):
    rs = load_runs_from(flip_records(), tmp_path)
    (t2, *_, t5), _ = build_tables(rs)
    assert t2.values.at["ERK", "CLS 70"] == pytest.approx(100 * (0.95 + 0.94) / 2)  # m_a only, both seeds
    assert t2.values.at["FCPTS (ERK)", "CLS 70"] == pytest.approx(100 * (0.90 + 0.89) / 2)
    assert t5.values.iloc[:, 0]["Sparsity allocation (OM_alloc)"].startswith("ERK (")
    cells = pd.DataFrame(t2.cells)
    # 2 seeds per rate, 4 runs per MS/OM, but one model: the seeds are not independent evidence
    assert set(cells.n_runs) == {2, 4} and set(cells.n_models) == {1} and set(cells.models) == {"m_a"}
    assert cells.ci_low.isna().all()
    # ERK ranks first, but on one model the order is a tie ('≈'), never '>'
    assert t5.values.iloc[:, 0]["Sparsity allocation (OM_alloc)"].startswith("ERK (94.50) ≈ FCPTS (ERK) (89.50)")
    # pooled over unmatched runs FCPTS would come first; --unmatched shows that but does not rank it
    (u2, *_, u5), _ = build_tables(rs, matched=False)
    assert u2.values.at["FCPTS (ERK)", "OM_alloc"] > u2.values.at["ERK", "OM_alloc"]
    assert u2.unranked == {"FCPTS (ERK)"}
    from ptsbench.tables.render import unmatched_columns

    assert unmatched_columns(pd.DataFrame(t2.cells)) == []
    assert any(c.startswith("CLS 70: ") and "m_a;m_h" in c for c in unmatched_columns(pd.DataFrame(u2.cells)))
    assert u5.values.iloc[:, 0]["Sparsity allocation (OM_alloc)"] == f"ERK ({u2.values.at['ERK', 'OM_alloc']:.2f})"


def test_interval_is_a_t_interval_over_models_and_absent_for_one_model(tmp_path):
    """3 models: mean ± t(0.975, df=2) * s / sqrt(3), each model's two seeds averaged first; a cell of one
    model prints its n instead of '±'."""
    recs = []
    for model, rel in (("m_a", 0.90), ("m_b", 0.80), ("m_c", 0.40)):
        recs.append(make_record(model, "erk", 0.5, rel, used=False))
        for cs in (0, 1):  # FCPTS seeds: +-0.02 around the model's value, so each model's seed-mean is rel + 0.05
            recs.append(
                make_record(
                    model, "fcpts", 0.5, rel + 0.05 + (0.02 if cs else -0.02), init="erk", calib_seed=cs, used=True
                )
            )
    (t2, *_), _ = build_tables(load_runs_from(recs, tmp_path))
    from ptsbench.tables.render import to_markdown

    cells = pd.DataFrame(t2.cells).set_index(["row", "column"])
    erk = cells.loc[("ERK", "CLS 50")]
    half = 4.302652729911275 * np.std([90.0, 80.0, 40.0], ddof=1) / math.sqrt(3)  # t(0.975, 2)
    assert erk.value == pytest.approx(70.0) and erk.n_models == 3 and erk.n_runs == 3
    assert (erk.ci_low, erk.ci_high) == pytest.approx((70.0 - half, 70.0 + half))
    fcpts = cells.loc[("FCPTS (ERK)", "CLS 50")]
    assert fcpts.value == pytest.approx(75.0) and fcpts.n_models == 3 and fcpts.n_runs == 6
    assert f"| ERK | 70.00 ± {half:.2f} |" in to_markdown(t2)
    one = [make_record("m_a", a, 0.5, r, used=False) for a, r in (("uniform", 0.5), ("erk", 0.6))]
    (t2, *_), _ = build_tables(load_runs_from(one, tmp_path / "one"))
    assert "| Uniform | 50.00 (n=1) | 50.00 (n=1) | — | — | 50.00 (n=1) |" in to_markdown(t2)  # no '±' from one model


def test_table3_pairs_each_run_with_its_none_twin(records_dir):
    (_, t3, *_), _ = build_tables(load_runs(records_dir))
    v = t3.values
    # each aspect varies one knob around the baseline (block, sparse input, no correction)
    expected = {
        "w/ Correction": 12.0,
        "w/o Correction": 8.0,
        "Sparse Input": 8.0,
        "Dense Input": 4.0,
        "Layer-wise": 5.0,
        "Block-wise": 8.0,
    }
    for row, cell in expected.items():
        assert v.at[row, "CLS 50"] == pytest.approx(cell)
        assert v.at[row, "OM_recon"] == pytest.approx(cell)  # one rate, one task
    assert math.isnan(v.at["Single", "CLS 50"])  # no single-layer runs: a gap row
    assert [g["kind"] for g in t3.gaps] == ["no-baseline"] and t3.gaps[0]["model"] == "m_b"
    assert any("4 reconstructed run(s) are off every aspect's baseline" in n for n in t3.notes)
    # another baseline: error correction on
    (_, t3b, *_), _ = build_tables(load_runs(records_dir), recon_baseline={"error_correction": True})
    assert t3b.values.at["Dense Input", "CLS 50"] == pytest.approx(6.0)
    assert t3b.values.at["Layer-wise", "CLS 50"] == pytest.approx(10.0)


def test_twin_must_differ_only_in_reconstruction(tmp_path):
    base = make_record("m_a", "l2norm", 0.5, 0.9, calib=1024)
    recon = make_record("m_a", "l2norm", 0.5, sparse=0.8, recon="block", inp="sparse", ec=False, calib=256)
    runs, gaps = paired_gains(load_runs_from([base, recon], tmp_path))
    assert math.isnan(runs.gain.iloc[0]) and [g["kind"] for g in gaps] == ["no-baseline"]
    twin = make_record("m_a", "l2norm", 0.5, 0.9, calib=256)
    runs, gaps = paired_gains(load_runs_from([base, recon, twin], tmp_path / "2"))
    assert not gaps and runs.gain.iloc[0] == pytest.approx((0.8 - 0.72) / 0.8)


def test_gen_gain_is_bounded_and_worsened_runs_are_counted(tmp_path):
    recs = [make_record("ldm", "erk", 0.8, task="gen", metric="fid_digits", hib=False, dense=5.0, sparse=30.0)]
    for inp, fid in (("sparse", 10.0), ("dense", 30.01)):  # FID better; FID a hair worse (paper: e^500)
        recs.append(
            make_record(
                "ldm",
                "erk",
                0.8,
                task="gen",
                metric="fid_digits",
                hib=False,
                dense=5.0,
                sparse=fid,
                recon="block",
                inp=inp,
                ec=False,
            )
        )
    (_, t3, *_), _ = build_tables(load_runs_from(recs, tmp_path))
    assert t3.values.at["Sparse Input", "GEN 80"] == pytest.approx(100 * math.exp(5.0 / -20.0))
    assert t3.values.at["Dense Input", "GEN 80"] == 0.0
    assert np.isfinite(t3.values.to_numpy(dtype=float)[~np.isnan(t3.values.to_numpy(dtype=float))]).all()
    # beside the bounded GEN term: the runs where FID got worse and their mean -R/A_dense x100 (30 -> 30.01 of 5)
    cols = list(t3.values.columns)
    assert cols[cols.index("GEN MS") + 1 : cols.index("GEN MS") + 3] == ["GEN worse runs", "GEN worse mean"]
    assert cols[-1] == "OM_recon"
    assert t3.values.at["Dense Input", "GEN worse runs"] == 1 and t3.values.at["Sparse Input", "GEN worse runs"] == 0
    assert t3.values.at["Dense Input", "GEN worse mean"] == pytest.approx(-100 * 0.01 / 5.0)


def load_runs_from(recs, tmp: Path, score: str = "metric"):
    d = tmp / "recs"
    for r in recs:
        write_json_atomic(d / f"{r['name']}.json", r)
    return load_runs(d, score)


def with_agreement(rec: dict, agreement: float) -> dict:
    return {**rec, "sparse": {**rec["sparse"], "agreement": agreement, "kl": 0.1}}


def test_score_agreement_makes_a_cls_value_100_times_the_mean_agreement_and_keeps_other_tasks(tmp_path):
    # CLS top-1 at half the dense one (rel 0.5) but agreeing with the dense model on 90/80/70% of inputs
    cls = [with_agreement(make_record(m, rel=0.5), a) for m, a in zip(MODELS, (0.9, 0.8, 0.7))]
    det = make_record("r_det", rel=0.9, task="det", metric="bbox_mAP")
    (*_, t4_metric, _), _ = build_tables(load_runs_from([*cls, det], tmp_path / "metric"))
    runs = load_runs_from([*cls, det], tmp_path / "agreement", score="agreement")
    (*_, t4, _), _ = build_tables(runs)
    assert t4_metric.values.at["CLS", "50"] == pytest.approx(50.0)
    assert t4.values.at["CLS", "50"] == pytest.approx(100 * (0.9 + 0.8 + 0.7) / 3)
    assert t4.values.at["DET", "50"] == pytest.approx(90.0) == t4_metric.values.at["DET", "50"]
    cls_rows = runs.ok[runs.ok.task == "cls"]
    assert (cls_rows["dense"] == 1.0).all() and sorted(cls_rows["sparse"]) == sorted(cls_rows.rel) == [0.7, 0.8, 0.9]


def test_score_agreement_on_a_record_without_agreement_is_a_gap_and_an_unknown_score_is_refused(tmp_path):
    runs = load_runs_from([make_record("m_a", rel=0.5)], tmp_path, score="agreement")
    assert list(runs.failed.error) == ["no sparse.agreement in the record (--score agreement); re-run it"]
    with pytest.raises(ValueError, match="score 'labels' is not one of the valid choices: metric, agreement"):
        load_runs(tmp_path / "recs", "labels")


def test_cli_score_option_reaches_the_tables_and_names_its_choices(tmp_path, capsys):
    recs = [with_agreement(make_record(m, rel=0.5), a) for m, a in zip(MODELS, (0.9, 0.8, 0.7))]
    for r in recs:
        write_json_atomic(tmp_path / "records" / f"{r['name']}.json", r)
    assert main([str(tmp_path / "records"), "--out", str(tmp_path / "t"), "--no-plots", "--score", "agreement"]) == 0
    printed = capsys.readouterr().out
    assert "score: agreement" in printed and "| L2Norm | 80.00 ± " in printed
    with pytest.raises(SystemExit) as refused:
        main([str(tmp_path / "records"), "--score", "labels"])
    assert refused.value.code == 2
    assert "--score: invalid choice: 'labels' (choose from 'metric', 'agreement')" in capsys.readouterr().err


def test_tables_6_4_5_by_hand(records_dir):
    (_, _, t6, t4, t5), sizes = build_tables(load_runs(records_dir))
    resnet, vit = ("ds", "ResNet"), ("ds", "ViT")
    # matched on (rate, seed): ResNet-50's 0.8 run failed, so every family and task is compared at 0.5 only
    assert list(t6.values.columns) == ["50", "OM_arch", "OM_robust"]
    assert t6.values.at[resnet, "50"] == pytest.approx(90.0) and t6.values.at[resnet, "OM_arch"] == pytest.approx(90.0)
    assert t6.values.at[resnet, "OM_robust"] == pytest.approx(0.0)
    assert math.isnan(t6.values.at[vit, "OM_robust"])  # a single size has no spread
    assert sorted(sizes["size"]) == ["18", "50", "b16"] and sizes.params.max() == 3_000_000
    assert list(t4.values.index) == ["CLS", "DET", "GEN"] and list(t4.values.columns) == ["50", "OM_task"]
    assert t4.values.at["DET", "50"] == pytest.approx(90.0) and t4.values.at["GEN", "OM_task"] == pytest.approx(50.0)
    ranking = t5.values.iloc[:, 0]
    assert ranking["Sparsity allocation (OM_alloc)"].startswith("FCPTS (ERK)")
    assert ranking["Sparsity allocation (OM_alloc)"].endswith(f"Uniform ({t5.csv_frame.score.iloc[2]:.2f})")
    # one model behind every reconstruction row, one DET and one GEN model: every order is a tie
    assert ranking["Reconstruction: input (OM_recon)"] == "Sparse Input (8.00) ≈ Dense Input (4.00)"
    assert ranking["Different tasks (OM_task)"] == "CLS (90.00) ≈ DET (90.00) ≈ GEN (50.00)"
    assert t5.csv_frame[t5.csv_frame["rank"] > 1].tied_with_previous.all() and " > " not in "".join(ranking.dropna())


def test_tables_6_4_unmatched_by_hand(records_dir):
    (_, _, t6, t4, t5), _ = build_tables(load_runs(records_dir), matched=False)
    resnet = ("ds", "ResNet")
    assert t6.values.at[resnet, "50"] == pytest.approx(90.0)
    assert t6.values.at[resnet, "80"] == pytest.approx(50.0) and t6.flags.at[resnet, "80"] == "*"
    assert t6.values.at[resnet, "OM_arch"] == pytest.approx(100 * qm(0.9, 0.5))
    g18, g50 = 100 * qm(0.9, 0.5), 90.0  # size 50 has only its 0.5 run
    assert t6.values.at[resnet, "OM_robust"] == pytest.approx(abs(g18 - g50) / 2)
    assert t4.values.at["CLS", "80"] == pytest.approx(50.0) and t4.flags.at["CLS", "80"] == "*"
    assert t4.values.at["DET", "50"] == pytest.approx(90.0) and math.isnan(t4.values.at["DET", "80"])
    ranking = t5.values.iloc[:, 0]
    assert (
        ranking["Model size robustness (OM_robust, lower is better)"]
        != ranking["Model size robustness (OM_robust, lower is better)"]
    )  # ResNet lacks a cell: not ranked
    assert any("Different tasks (OM_task): not ranked" in n for n in t5.notes)


def test_cli_writes_every_format_and_plots(records_dir, tmp_path, capsys, monkeypatch):
    calls = []
    fake = types.ModuleType("ptsbench.plots.allocation")
    fake.plot_layer_allocation = lambda rates, title, path: (
        calls.append((rates, title)),
        Path(path).write_bytes(b"png"),
    )
    monkeypatch.setitem(sys.modules, "ptsbench.plots.allocation", fake)
    out = tmp_path / "tables"
    assert main([str(records_dir), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for title in ("Table 2", "Table 3", "Table 6", "Table 4", "Table 5"):
        assert f"### {title}:" in printed
    # 3 models that agree exactly (a zero-width interval) and 1 model: no '±', the n instead
    assert "| L2Norm | 90.00 (n=3) | 50.00 (n=1) |" in printed and "| fail |" not in printed.split("### Gaps")[0]
    for stem in ("table2_allocation", "table3_reconstruction", "table6_architecture", "table4_tasks", "table5_ranking"):
        for ext in ("md", "csv", "tex"):
            assert (out / f"{stem}.{ext}").stat().st_size > 0
    from ptsbench.tables.render import unmatched_columns

    for stem in ("table2_allocation", "table3_reconstruction", "table6_architecture", "table4_tasks"):
        cells = pd.read_csv(out / f"{stem}_cells.csv")
        if stem in ("table2_allocation", "table3_reconstruction"):
            assert unmatched_columns(cells) == [], stem  # matched: the same models down every column
        assert list(cells.columns[:11]) == [
            "table",
            "row",
            "task",
            "column",
            "rate",
            "value",
            "n_models",
            "n_runs",
            "ci_low",
            "ci_high",
            "models",
        ]
        assert (cells.n_models > 0).all() and (cells.n_runs >= cells.n_models).all()
    assert r"\textbf{100.00}" in (out / "table2_allocation.tex").read_text()
    t2 = pd.read_csv(out / "table2_allocation.csv", index_col=0)
    assert t2.at["L2Norm", "CLS 50"] == pytest.approx(90.0) and math.isnan(t2.at["FCPTS (ERK)", "DET MS"])
    gaps = pd.read_csv(out / "gaps.csv")
    # the failed L2Norm run is a gap of Tables 2, 6 and 4; Table 2 lacks Uniform on m_c at 0.8 and FCPTS on DET;
    # DET and GEN never ran 0.8, which only CLS did: Table 4's 0.8 column is CLS's own, no gap of theirs
    assert sorted(gaps.kind) == ["failed"] * 3 + ["missing"] * 2 + ["no-baseline"]
    assert "CUDA out of memory" in (out / "gaps.md").read_text()
    for png in ("fig5_size_loss.png", "rate_curves_by_allocator.png"):
        assert (out / "plots" / png).read_bytes()[:4] == b"\x89PNG"
    page = (out / "report.html").read_text()
    from ptsbench.tables.findings import load_findings

    # Tables 2, 3, 6, 4, 5, and beyond the paper the per-family gain over Uniform (no Wanda runs: no alloc-wanda)
    assert page.count('<section id="table-') == 6 and page.count('<tr id="finding-') == len(load_findings())
    assert '<section id="table-alloc-family">' in page and (out / "alloc-family.csv").exists()
    assert "http://" not in page and "https://" not in page and page.count("data:image/png;base64,") >= 2
    fixed = pd.read_csv(out / "held_fixed.csv")
    assert {"table2", "table3", "table6", "table4"} <= set(fixed.table)
    at_default = {(t, k): d for t, k, d in zip(fixed.table, fixed.knob, fixed.at_default)}
    assert at_default[("table2", "calib.num_samples")]  # 1024: not in the footnote
    assert not at_default[("table6", "allocator.name")]  # l2norm; the root config picks uniform
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


def test_findings_md_lists_every_finding_with_a_verdict(records_dir, tmp_path):
    from ptsbench.tables.findings import check_findings, load_findings

    rs = load_runs(records_dir)
    tables, _ = build_tables(rs)
    verdicts = {v.id: v for v in check_findings(tables, rs)}
    assert set(verdicts) == {f["id"] for f in load_findings()} and len(verdicts) >= 15
    assert all(f.get("section") for f in load_findings())
    # one DET and one GEN model, 1-3 CLS models: no finding may hold or fail here, and each says why
    assert {v.verdict for v in verdicts.values()} == {"not enough evidence"}
    best = verdicts["alloc-fcpts-erk-best"]
    assert best.margin == pytest.approx(100 * qm(qm(1.0, 0.8), 0.8) - 100 * qm(qm(0.9, 0.5), 0.5))
    assert best.reason == "1 GEN model: needs 3 per task" and best.models == "CLS 3, GEN 1 models"
    assert best.per_task == ["CLS +17.75 (3 models)", "GEN +30.00 (1 model)"]  # each pooled task's own margin
    assert verdicts["task-gen-most-fragile"].reason == "1 DET model, 1 GEN model: needs 3 per task"
    assert (
        verdicts["recon-sparse-input"].margin == pytest.approx(4)
        and verdicts["recon-sparse-input"].models == "CLS 1 model"
    )
    assert verdicts["arch-vit-best"].reason == "2 ResNet sizes (1 size pair), 1 ViT size: needs 3 per family"
    assert verdicts["alloc-fcpts-init"].reason == "no value for FCPTS (L2Norm) in table2 OM_alloc"
    assert "Single" in verdicts["recon-granularity"].reason  # no single-unit runs
    main([str(records_dir), "--out", str(tmp_path / "t"), "--no-plots"])
    text = (tmp_path / "t" / "findings.md").read_text()
    assert text.count("| 5.") + text.count("| beyond |") == len(verdicts)
    assert "**not enough evidence** (1 GEN model: needs 3 per task)" in text
    frame = pd.read_csv(tmp_path / "t" / "findings.csv")  # the same verdicts as data
    assert list(frame["id"]) == list(verdicts) and set(frame["verdict"]) == {"not enough evidence"}
    row = frame.set_index("id").loc["alloc-fcpts-erk-best"]
    assert row["margin"] == pytest.approx(best.margin, abs=1e-4) and row["reason"] == best.reason


def test_fcpts_downsample_finding_reads_the_init_and_learned_rates(tmp_path):
    from ptsbench.tables.findings import check_finding

    recs = []
    for model, gains in (("m_a", (0.10, 0.20)), ("m_b", (0.05, 0.05)), ("m_c", (0.30, 0.20))):
        for seed, gain in enumerate(gains):  # a model's seeds are averaged first: 15, 5, 25 points
            rec = make_record(model, "fcpts", 0.8, 0.9, init="erk", seed=seed)
            rec["sparsity"]["target_per_layer"] = {"layer2.0.downsample.0": 0.1 + gain, "fc": 0.5}
            rec["allocation"] = {"init_rates": {"layer2.0.downsample.0": 0.1, "fc": 0.6}}
            recs.append(rec)
    rs = load_runs_from(recs, tmp_path)
    spec = {
        "id": "x",
        "section": "5.1.1",
        "kind": "layers_more_pruned",
        "rows": ["FCPTS (ERK)"],
        "layers": ["*downsample*"],
    }
    v = check_finding(spec, {}, rs.ok)
    half = 4.302652729911275 * 10.0 / math.sqrt(3)  # t(0.975, 2) * sd(15, 5, 25) / sqrt(3)
    assert v.margin == pytest.approx(15.0) and v.ci == pytest.approx((15.0 - half, 15.0 + half))
    assert v.verdict == "not enough evidence" and v.reason == "interval spans 0" and v.models == "CLS 3 models"
    assert check_finding(spec, {}, rs.ok[rs.ok.model != "m_c"]).reason == "2 CLS models: needs 3 per task"
    with pytest.raises(ValueError, match="unknown kind 'nope'"):
        check_finding(
            {"id": "y", "kind": "nope", "table": "table2", "column": "OM_alloc", "rows": ["ERK"]},
            {"table2": build_tables(rs)[0][0]},
        )


def test_a_run_that_reads_no_calibration_stands_for_every_seed(tmp_path):
    """ERK without reconstruction reads no calibration data: one run matches FCPTS's and the
    reconstructed runs' two calibration seeds (equal n per column), and is their none twin."""
    recs = [make_record(m, "erk", 0.8, r, used=False) for m, r in (("m_a", 0.5), ("m_c", 0.4))]
    for cs in (0, 1):
        for m, r in (("m_a", 0.6), ("m_c", 0.5)):
            recs.append(make_record(m, "fcpts", 0.8, r + 0.01 * cs, init="erk", calib_seed=cs, used=True))
            for inp in ("sparse", "dense"):
                dense = MODELS[m][3]
                recs.append(
                    make_record(
                        m,
                        "erk",
                        0.8,
                        sparse=dense * (r + (0.1 if inp == "sparse" else 0.05)),
                        recon="block",
                        inp=inp,
                        ec=False,
                        calib_seed=cs,
                        used=True,
                    )
                )
    (t2, t3, *_), _ = build_tables(load_runs_from(recs, tmp_path))
    cells = pd.DataFrame(t2.cells).set_index(["row", "column"])
    # matched on both seeds, but counted once: 2 models, 2 runs for ERK and 4 for FCPTS
    assert cells.at[("ERK", "CLS 80"), "n_models"] == cells.at[("FCPTS (ERK)", "CLS 80"), "n_models"] == 2
    assert cells.at[("ERK", "CLS 80"), "n_runs"] == 2 and cells.at[("FCPTS (ERK)", "CLS 80"), "n_runs"] == 4
    assert t2.values.at["ERK", "CLS 80"] == pytest.approx(45.0)
    assert t2.values.at["FCPTS (ERK)", "CLS 80"] == pytest.approx(100 * (0.605 + 0.505) / 2)  # seed-means first
    assert not t3.gaps and t3.values.at["Sparse Input", "CLS 80"] > t3.values.at["Dense Input", "CLS 80"] > 0
    c3 = pd.DataFrame(t3.cells).set_index(["row", "column"])
    assert c3.at[("Sparse Input", "CLS 80"), "n_runs"] == c3.at[("Dense Input", "CLS 80"), "n_runs"] == 4


def test_out_under_a_regular_file_is_one_line_and_writes_nothing(records_dir, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    assert main([str(records_dir), "--out", str(tmp_path / "afile" / "tables"), "--no-plots"]) == 2
    err = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "--out" in err[0] and "afile' is a file" in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "records"]


def test_a_full_disk_mid_write_leaves_the_previous_tables_whole(records_dir, tmp_path, capsys, monkeypatch):
    import errno

    import ptsbench.aggregate as agg

    out = tmp_path / "tables"
    assert main([str(records_dir), "--out", str(out), "--no-plots"]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def full(path, *args, **kwargs):  # the page is written last: a part set exists by then
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(out / "report.html"))

    monkeypatch.setattr(agg, "report_html", full)
    capsys.readouterr()
    assert main([str(records_dir), "--out", str(out), "--no-plots"]) == 2
    printed = capsys.readouterr().out.splitlines()
    err = [ln for ln in printed if ln.startswith("error:")]
    assert len(err) == 1 and printed[-1] == err[0]  # the whole message on its one, last line
    assert "No space left on device" in err[0] and str(out / "report.html") in err[0]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["records", "tables"]  # no temporary folder left
    out.rename(tmp_path / "kept")
    assert main([str(records_dir), "--out", str(out), "--no-plots"]) == 2 and not out.exists()
