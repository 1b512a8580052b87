"""Model-level evidence: jackknife intervals equal the textbook t intervals, differences pair by model,
verdicts need 3 models per pooled task and an interval that excludes 0, Table 5 ties what is not
significant, pooled findings show each task's margin, and signed scores keep harm negative."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from test_aggregate import load_runs_from, make_record

from ptsbench.tables import build_tables
from ptsbench.tables.evidence import BOOTSTRAP, cell, combine, interval, make_plan, n_models, signed_qmean
from ptsbench.tables.findings import check_finding
from ptsbench.tables.verdicts import FAILS, HOLDS, UNKNOWN, judge


def t_interval(x: np.ndarray) -> tuple[float, float]:
    half = stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return x.mean() - half, x.mean() + half


def test_the_jackknife_interval_of_a_mean_over_models_is_the_t_interval():
    x = np.array([0.91, 0.72, 0.85, 0.60, 0.77])
    units = [("CLS", f"m{i}") for i in range(5)]
    plan = make_plan(units)
    est = cell(plan, dict(zip(units, x)))
    assert est.value == pytest.approx(x.mean()) and interval(plan, est) == pytest.approx(t_interval(x))
    one = cell(plan, {units[0]: 0.9})
    assert math.isnan(interval(plan, one)[0]) and n_models(plan, one) == {"CLS": 1}  # one model: no interval
    same = cell(plan, dict.fromkeys(units[:3], 0.8))
    assert interval(plan, same) == pytest.approx((0.8, 0.8))  # every model agrees: zero width


def test_a_difference_of_two_rows_pairs_by_model():
    a, b = np.array([0.9, 0.5, 0.7, 0.2]), np.array([0.85, 0.40, 0.68, 0.10])
    units = [("CLS", m) for m in "wxyz"]
    plan = make_plan(units)
    diff = combine(lambda p, q: p - q, cell(plan, dict(zip(units, a))), cell(plan, dict(zip(units, b))))
    # the paired t interval of the per-model differences, far narrower than the unpaired one
    assert interval(plan, diff) == pytest.approx(t_interval(a - b))
    unpaired = stats.ttest_ind(a, b).confidence_interval(0.95)
    assert interval(plan, diff)[0] > 0 > unpaired.low  # paired, the gain is clear; pooled across models it is not


def test_two_tasks_resample_independently_welch_degrees_of_freedom():
    a, b = np.array([0.9, 0.8, 0.6]), np.array([0.5, 0.45, 0.2, 0.3, 0.4])
    units_a, units_b = [("CLS", f"c{i}") for i in range(3)], [("DET", f"d{i}") for i in range(5)]
    plan = make_plan(units_a + units_b)
    diff = combine(lambda p, q: p - q, cell(plan, dict(zip(units_a, a))), cell(plan, dict(zip(units_b, b))))
    va, vb = a.var(ddof=1) / 3, b.var(ddof=1) / 5
    df = (va + vb) ** 2 / (va**2 / 2 + vb**2 / 4)
    half = stats.t.ppf(0.975, df) * math.sqrt(va + vb)
    assert interval(plan, diff) == pytest.approx((a.mean() - b.mean() - half, a.mean() - b.mean() + half), rel=1e-4)
    assert n_models(plan, diff) == {"CLS": 3, "DET": 5}


def test_the_cluster_bootstrap_is_narrower_than_t_at_three_models():
    x = np.array([0.9, 0.7, 0.5])
    units = [("CLS", f"m{i}") for i in range(3)]
    boot = make_plan(units, BOOTSTRAP)
    lo, hi = interval(boot, cell(boot, dict(zip(units, x))))
    t_lo, t_hi = t_interval(x)
    assert t_lo < lo and hi < t_hi and lo >= 0.5 and hi <= 0.9  # it cannot leave the sample's range
    with pytest.raises(ValueError, match="interval method 'percentile'; valid choices: jackknife, bootstrap"):
        make_plan(units, "percentile")


def test_signed_quadratic_mean_estimate_keeps_harm_negative():
    units = [("CLS", f"m{i}") for i in range(3)]
    plan = make_plan(units)
    rates = [cell(plan, dict(zip(units, v))) for v in ([-0.04, -0.02, -0.03], [0.01, 0.0, 0.02])]
    ms = signed_qmean(plan, rates)
    assert ms.value == pytest.approx(-math.sqrt((0.03**2 - 0.01**2) / 2))


def test_verdicts_need_three_models_and_an_interval_that_excludes_zero():
    units = [("CLS", f"m{i}") for i in range(4)] + [("GEN", "g0")]
    plan = make_plan(units)
    up = cell(plan, dict(zip(units[:4], [2.0, 3.0, 2.5, 3.5])))
    assert judge(plan, up).verdict == HOLDS and judge(plan, combine(lambda x: -x, up)).verdict == FAILS
    assert judge(plan, cell(plan, dict(zip(units[:4], [2.0, -3.0, 2.5, -1.0])))).reason == "interval spans 0"
    two = judge(plan, cell(plan, dict(zip(units[:2], [2.0, 3.0]))))
    assert (two.verdict, two.reason) == (UNKNOWN, "2 CLS models: needs 3 per task")
    pooled = combine(lambda a, b: a + b, up, cell(plan, {units[4]: 1.0}))
    assert judge(plan, pooled).reason == "1 GEN model: needs 3 per task"
    assert judge(plan, pooled, min_models=1).reason == "no interval"  # one GEN model has no spread to measure
    flat = judge(plan, cell(plan, dict.fromkeys(units[:3], 2.0)))
    assert (flat.verdict, flat.reason) == (UNKNOWN, "zero-width interval")
    near = cell(plan, dict(zip(units[:4], [0.5, -0.5, 1.0, -1.0])))
    assert judge(plan, near, tolerance=5.0).verdict == HOLDS and judge(plan, near, tolerance=0.1).verdict == UNKNOWN


def allocation_records(cls_gain: float, det_gain: float) -> list[dict]:
    """Uniform and ERK on 3 CLS and 3 DET models; ERK's gain differs by task."""
    recs = []
    for task, metric, models, gain in (
        ("cls", "top1", ("m_a", "m_b", "m_c"), cls_gain),
        ("det", "map", ("d1", "d2", "d3"), det_gain),
    ):
        for i, m in enumerate(models):
            base = 0.5 + 0.1 * i
            recs.append(make_record(m, "uniform", 0.5, base, task=task, metric=metric, dense=1.0, used=False))
            recs.append(
                make_record(m, "erk", 0.5, base + gain + 0.01 * i, task=task, metric=metric, dense=1.0, used=False)
            )
    return recs


def test_table5_orders_only_significant_differences(tmp_path):
    (t2, *_, t5), _ = build_tables(load_runs_from(allocation_records(0.3, 0.2), tmp_path))
    assert t5.values.iloc[:, 0]["Sparsity allocation (OM_alloc)"] == (
        f"ERK ({t2.values.at['ERK', 'OM_alloc']:.2f}) > Uniform ({t2.values.at['Uniform', 'OM_alloc']:.2f})"
    )
    (t2, *_, t5), _ = build_tables(load_runs_from(allocation_records(0.3, 0.2)[:8], tmp_path / "few"))
    assert " ≈ " in t5.values.iloc[:, 0]["Sparsity allocation (OM_alloc)"]  # 1 DET model: a tie


def test_a_pooled_finding_shows_each_task_and_flags_disagreement(tmp_path):
    (t2, *_), _ = build_tables(load_runs_from(allocation_records(0.3, -0.05), tmp_path))
    spec = {"id": "x", "kind": "order", "table": "table2", "column": "OM_alloc", "rows": ["ERK", "Uniform"]}
    v = check_finding(spec, {"table2": t2}, None)
    assert v.verdict == HOLDS and v.models == "CLS 3, DET 3 models"  # pooled, CLS carries it ...
    assert [p.split(" ")[:2] for p in v.per_task] == [["CLS", "+31.00"], ["DET", "-4.00"]]
    assert v.flag == "tasks disagree in sign"  # ... but DET goes the other way


def test_a_reconstruction_that_hurts_classification_has_a_negative_ms(tmp_path):
    recs = []
    for m, dense in (("m_a", 0.8), ("m_b", 0.5), ("m_c", 0.9)):
        recs.append(make_record(m, "l2norm", 0.5, sparse=0.40, dense=dense, used=False))
        recs.append(make_record(m, "l2norm", 0.7, sparse=0.20, dense=dense, used=False))
        for rate, none, loss in ((0.5, 0.40, 0.03), (0.7, 0.20, 0.01)):  # it hurts by 3 and 1 points
            recs.append(
                make_record(
                    m, "l2norm", rate, sparse=none - loss * dense, dense=dense, recon="block", inp="sparse", ec=False
                )
            )
    (_, t3, *_), _ = build_tables(load_runs_from(recs, tmp_path))
    assert t3.values.at["Block-wise", "CLS 50"] == pytest.approx(-3.0)
    expected = -100 * math.sqrt((0.03**2 + 0.01**2) / 2)  # the paper's squares would print +2.24
    assert t3.values.at["Block-wise", "CLS MS"] == pytest.approx(expected)
    assert t3.values.at["Block-wise", "OM_recon"] == pytest.approx(expected)
