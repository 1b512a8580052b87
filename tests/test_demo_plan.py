"""scripts/demo.py's plans: the embedded case keeps its 534 runs, the real ImageNet case covers every
track at its own rate with one calibration seed, and --suite moves only the classifiers."""

from __future__ import annotations

from collections import Counter

import pytest
from script_modules import load_script


@pytest.fixture(scope="module")
def demo():
    return load_script("demo")


def knobs(job: list[str]) -> dict[str, str]:
    return dict(o.lstrip("+").split("=", 1) for o in job)


def test_embedded_plan_is_the_demo_runs(demo):
    jobs = demo.plan_jobs(demo.sweeps())
    assert len(jobs) == 534 and len({tuple(j) for j in jobs}) == 534


def test_real_case_covers_every_track_on_the_three_lite_models(demo):
    jobs = [knobs(j) for j in demo.plan_jobs(demo.sweeps("imagenet_lite"), "imagenet_lite")]
    assert len(jobs) == 78 and {j["experiment"] for j in jobs} == {"real_lite"}
    assert Counter(j["model"] for j in jobs) == {f"efficientnet_lite{i}": 26 for i in range(3)}
    assert all("calib.seed" not in j for j in jobs)  # one seed: the photos' crops are the calibration set
    recon = {
        (j["reconstruction"], j["reconstruction.input"], j["reconstruction.error_correction"])
        for j in jobs
        if "reconstruction.input" in j
    }
    assert recon == {
        ("single", "sparse", "False"),
        ("layer", "sparse", "False"),
        ("block", "sparse", "False"),
        ("block", "dense", "False"),
        ("block", "sparse", "True"),
    }
    table2 = {
        (j["allocator"], j["sparsity.rate"]) for j in jobs if "reconstruction.input" not in j and "method" not in j
    }
    allocators = {"uniform", "l2norm", "erk", "owl", "alphapruning", "fcpts_erk", "fcpts_l2norm"}
    assert table2 == {(a, r) for a in allocators for r in ("0.3", "0.5")}
    methods = {(j["method"], j["allocator"]) for j in jobs if "method" in j}
    assert methods == {
        ("wanda", "uniform"),
        ("wanda", "owl"),
        ("wanda", "erk"),
        ("ria", "uniform"),
        ("wanda_dsnot", "uniform"),
        ("magnitude_dsnot", "uniform"),
        ("sparsegpt", "uniform"),
    }
    assert all(j["sparsity.rate"] == "0.5" for j in jobs if "reconstruction.input" in j)
    assert all(j["sparsity.rate"] == "0.3" for j in jobs if "method" in j)  # at 0.5 every method scores 0/20


def test_suite_moves_only_the_embedded_classifiers(demo):
    cls, det, methods = ["experiment=demo_alloc"], ["experiment=demo_det"], ["experiment=demo_methods"]
    real = ["experiment=real_lite"]
    assert demo.SUITES[0] == "fashion5k"  # the default suite: the experiments name it themselves
    assert demo.with_suite(cls, "mnist5k") == [*cls, "dataset=mnist5k"]
    assert demo.with_suite(methods, "mnist5k") == [*methods, "dataset=mnist5k"]
    assert demo.with_suite(det, "mnist5k") == det and demo.with_suite(real, "mnist5k") == real
    assert demo.with_suite(cls, "fashion5k") == cls
