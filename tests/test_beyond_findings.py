"""The claims of the methods published after the paper get verdicts: Table 2 rebuilt on Wanda masks
(OWL vs uniform for Wanda), the methods table's two-row orders pooled over groups (RIA vs Wanda,
DSnoT on Wanda), and the paper's own findings judged among the paper's rows only."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest
from scipy.stats import t as student_t
from synthetic_records import cls_record

from ptsbench.records import write_json_atomic
from ptsbench.tables import beyond_tables, load_runs, methods_table
from ptsbench.tables.findings import HOLDS, check_finding, load_findings

MODELS = ("m_a", "m_b", "m_c")
SIZES = {"m_a": "20", "m_b": "32", "m_c": "56"}


def _record(model, allocator, sparse, *, rate=0.7, criterion="magnitude", group="layer", refine="none", seed=0):
    sp = {"rate": rate, "pattern": "unstructured", "criterion": criterion, "group": group, "refine": refine}
    timing = {"allocate": 0.5, "mask": 0.5, "total": 2.0}
    return cls_record(
        model, sparse, sparsity=sp, allocator=allocator, size=SIZES[model], calib_seed=seed, timing=timing
    )


def _wanda(model, allocator, sparse, **kw):
    return _record(model, allocator, sparse, criterion="wanda", group="row", **kw)


def _write(tmp_path, recs):
    for r in recs:
        write_json_atomic(tmp_path / f"{r['name']}.json", r)
    return load_runs(tmp_path)


def _spec(finding_id):
    return next(s for s in load_findings() if s["id"] == finding_id)


def _t_interval(diffs):
    d = np.asarray(diffs, dtype=float)
    half = student_t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
    return d.mean() - half, d.mean() + half


def test_table2_on_wanda_masks_holds_only_wanda_runs_and_judges_owl(tmp_path):
    owl, uniform = {"m_a": 0.56, "m_b": 0.51, "m_c": 0.44}, {"m_a": 0.50, "m_b": 0.46, "m_c": 0.40}
    recs = [_wanda(m, "owl", v) for m, v in owl.items()] + [_wanda(m, "uniform", v) for m, v in uniform.items()]
    recs += [_record(m, "uniform", 0.1) for m in MODELS]  # magnitude runs: Table 2's, not this table's
    recs += [_record(m, "uniform", 0.9, criterion="wanda", group="layer") for m in MODELS]  # "Wanda (layer)"
    (table,) = beyond_tables(_write(tmp_path, recs))
    assert table.key == "alloc-wanda" and "Wanda" in table.title
    assert table.values.at["OWL", "CLS 70"] == pytest.approx(100 * np.mean(list(owl.values())))
    assert table.values.at["Uniform", "CLS 70"] == pytest.approx(100 * np.mean(list(uniform.values())))
    assert table.beyond == {"OWL"}
    v = check_finding(_spec("newer-owl-beats-uniform-wanda"), {"alloc-wanda": table})
    diffs = [100 * (owl[m] - uniform[m]) for m in MODELS]  # 6, 5, 4: paired by model
    assert v.margin == pytest.approx(np.mean(diffs))
    assert v.ci == pytest.approx(_t_interval(diffs))
    assert v.verdict == HOLDS
    assert {c["table"] for c in table.cells} == {"alloc-wanda"}  # never mixed with Table 2's cells


def test_a_missing_wanda_run_is_a_gap_of_this_table(tmp_path):
    recs = [_wanda(m, "uniform", 0.5) for m in MODELS] + [_wanda(m, "owl", 0.5) for m in MODELS[:2]]
    (table,) = beyond_tables(_write(tmp_path, recs))
    assert [(g["table"], g["row"], g["model"]) for g in table.gaps] == [("alloc-wanda", "OWL", "m_c")]


def test_no_wanda_runs_no_table(tmp_path):
    assert beyond_tables(_write(tmp_path, [_record(m, "uniform", 0.5) for m in MODELS])) == []


def _methods_runs(tmp_path):
    """RIA and Wanda under Uniform (3 models) and ERK (2 models) at 70%: 2 groups of the methods table."""
    wanda = {("uniform", "m_a"): 0.50, ("uniform", "m_b"): 0.40, ("uniform", "m_c"): 0.30}
    wanda |= {("erk", "m_a"): 0.60, ("erk", "m_b"): 0.50}
    ria = {k: v + d for (k, v), d in zip(wanda.items(), (0.06, 0.02, 0.04, 0.10, 0.02))}
    recs = [_record(m, a, 0.2) for a, m in wanda]  # the Magnitude row of each group
    recs += [_wanda(m, a, v) for (a, m), v in wanda.items()]
    recs += [_record(m, a, v, criterion="ria") for (a, m), v in ria.items()]
    return _write(tmp_path, recs), wanda, ria


def test_a_two_row_order_on_the_methods_table_is_pooled_over_its_groups(tmp_path):
    runs, wanda, ria = _methods_runs(tmp_path)
    table = methods_table(runs)
    assert {g[0][1] for g in table.groups} == {"70 Uniform", "70 ERK"}
    v = check_finding(_spec("newer-ria-beats-wanda"), {"methods": table})
    # each group: the mean over its models of RIA - Wanda; then the mean over the groups
    per_group = {a: np.mean([100 * (ria[k] - wanda[k]) for k in wanda if k[0] == a]) for a in ("uniform", "erk")}
    assert v.margin == pytest.approx(np.mean(list(per_group.values())))  # (4 + 6) / 2
    assert "mean over 2 group(s): CLS 70 ERK, CLS 70 Uniform" in v.detail
    # a replicate leaves one model out of every group: the jackknife over m_a, m_b, m_c by hand
    reps = []
    for out in MODELS:
        parts = [
            np.mean([100 * (ria[k] - wanda[k]) for k in wanda if k[0] == a and k[1] != out]) for a in ("uniform", "erk")
        ]
        reps.append(np.mean(parts))
    reps = np.array(reps)
    se = math.sqrt((len(reps) - 1) / len(reps) * np.sum((reps - reps.mean()) ** 2))
    half = student_t.ppf(0.975, len(reps) - 1) * se
    assert v.ci == pytest.approx((v.margin - half, v.margin + half))


def test_only_an_order_of_two_rows_is_defined_on_the_methods_table(tmp_path):
    runs, _, _ = _methods_runs(tmp_path)
    spec = {**_spec("newer-ria-beats-wanda"), "kind": "best", "rows": ["RIA"]}
    with pytest.raises(ValueError, match="only kind 'order' with two rows"):
        check_finding(spec, {"methods": methods_table(runs)})


def test_a_missing_row_in_every_group_gives_a_reason_not_a_verdict(tmp_path):
    runs, _, _ = _methods_runs(tmp_path)
    v = check_finding(_spec("newer-dsnot-improves-wanda"), {"methods": methods_table(runs)})
    assert v.verdict != HOLDS and "no group of methods holds both Wanda + DSnoT and Wanda" in v.reason


def test_paper_findings_are_judged_among_the_papers_rows(tmp_path):
    """An OWL row below Uniform does not make 'Uniform is the worst allocation' fail or lose its margin."""
    from ptsbench.tables import build_tables

    scores = {"uniform": 0.30, "l2norm": 0.60, "erk": 0.62, "owl": 0.10}
    recs = [
        _record(m, a, v + 0.01 * i * (j + 1)) for j, (a, v) in enumerate(scores.items()) for i, m in enumerate(MODELS)
    ]
    (t2, *_), _ = build_tables(_write(tmp_path, recs))
    assert t2.beyond == {"OWL"} and t2.values.at["OWL", "CLS 70"] < t2.values.at["Uniform", "CLS 70"]
    v = check_finding(_spec("alloc-uniform-worst"), {"table2": t2})
    # L2Norm - Uniform = 30, 31, 32 over the models (the smaller of the paper's other rows)
    assert v.verdict == HOLDS and v.margin == pytest.approx(31.0), v.reason
    assert "vs worst other: L2Norm" in v.detail


def test_paper_tables_leave_refined_masks_out_and_refined_runs_read_calibration(tmp_path):
    """A DSnoT-refined magnitude run is a method row, not a Table 2 allocator row, and (an older record
    without calibration.used) it depends on its calibration sample, so its seeds are replicates."""
    from ptsbench.tables import build_tables

    for i, model in enumerate(MODELS):
        write_json_atomic(tmp_path / f"u{i}.json", _record(model, "uniform", 0.5))
        write_json_atomic(tmp_path / f"d{i}.json", _record(model, "uniform", 0.6, refine="dsnot"))
    runs = load_runs(tmp_path)
    (t2, *_), _ = build_tables(runs)
    assert list(t2.values.index) == ["Uniform"]
    assert t2.values.loc["Uniform", "CLS 70"] == pytest.approx(50)
    refined = runs.ok[runs.ok.refine == "dsnot"]
    assert len(refined) == 3 and not refined.seed_free.any() and runs.ok[runs.ok.refine == "none"].seed_free.all()
    assert methods_table(runs).values.loc[("CLS", "70 Uniform", "Magnitude + DSnoT"), "score"] == pytest.approx(60)


def test_allocation_gain_per_family_is_paired_by_model_within_each_family(tmp_path):
    """alloc-family: per family, mean over its models of (allocator - Uniform), each model's score the mean
    over rates; the interval is over that family's models only."""
    from ptsbench.tables.family_gain import family_gain_table
    from ptsbench.tables.methods import paper_methods

    resnet = {"m_a": (0.50, 0.70), "m_b": (0.40, 0.55), "m_c": (0.30, 0.50)}  # (uniform, erk) at 50 and 70
    vit = {"m_a": (0.60, 0.61), "m_b": (0.50, 0.53)}
    recs = []
    for family, models in (("resnet", resnet), ("vit", vit)):
        for model, (uniform, erk) in models.items():
            for rate, shift in ((0.5, 0.1), (0.7, 0.0)):
                for allocator, v in (("uniform", uniform), ("erk", erk)):
                    rec = _record(model, allocator, v + shift, rate=rate)
                    name = f"{family}_{model}"
                    rec["model"] = {**rec["model"], "name": name, "family": family}
                    rec["config"]["model"] = {**rec["config"]["model"], "name": name, "family": family}
                    rec["choices"]["model"] = name
                    rec["name"] = rec["digest"] = hashlib.sha256(json.dumps(rec, sort_keys=True).encode()).hexdigest()[
                        :20
                    ]
                    recs.append(rec)
    table = family_gain_table(paper_methods(_write(tmp_path, recs)))
    assert table.key == "alloc-family" and list(table.values.index) == ["ResNet", "ViT"]
    resnet_gains = [100 * (e - u) for u, e in resnet.values()]  # 20, 15, 20: the shift cancels in the pair
    assert table.values.at["ResNet", "ERK"] == pytest.approx(np.mean(resnet_gains))
    assert table.values.at["ViT", "ERK"] == pytest.approx(2.0)  # (1 + 3) / 2
    assert table.values.at["ResNet", "models"] == 3 and table.values.at["ViT", "models"] == 2
    from ptsbench.tables.evidence import interval

    assert interval(table.plan, table.est[("ResNet", "ERK")]) == pytest.approx(_t_interval(resnet_gains))
    assert interval(table.plan, table.est[("ViT", "ERK")]) == pytest.approx(_t_interval([1.0, 3.0]))
    assert table.beyond == {"ResNet", "ViT"}  # a report: the paper's findings never read it
