"""A run is reported ok only when it did what was asked: an N:M pattern's rate is accepted within rounding
(and derived when left out); the achieved global rate equals the target up to the documented per-layer
rounding, checked right after masking; every numeric knob is finite and in a sane range; batch sizes are
capped at the calibration set; running out of memory is a failed record naming the knob to lower."""

from __future__ import annotations

import json

import pytest

from ptsbench.config.spec import resolve
from ptsbench.errors import ConfigError

TINY = ["dataset.num_test=100", "calib.num_samples=32", "eval.batch_size=100"]


@pytest.mark.parametrize("rate", [None, "0.666667", "0.6666666666666667"])
def test_a_1_of_3_pattern_takes_its_rate_within_rounding_or_derives_it(make_cfg, rate):
    given = [] if rate is None else [f"sparsity.rate={rate}"]
    spec = resolve(make_cfg("sparsity=nm", "sparsity.n=1", "sparsity.m=3", *given))
    assert spec.rate == pytest.approx(2 / 3, abs=1e-6)
    assert spec.identity.config["sparsity"]["rate"] == pytest.approx(2 / 3, abs=1e-6)
    assert spec.identity.name.split("-")[-2] == "s0.666667"


def test_a_derived_nm_rate_names_the_same_run_as_the_printed_one(make_cfg):
    derived = resolve(make_cfg("sparsity=nm", "sparsity.n=1", "sparsity.m=3")).identity.digest
    printed = resolve(make_cfg("sparsity=nm", "sparsity.n=1", "sparsity.m=3", "sparsity.rate=0.666667")).identity.digest
    default_2_4 = resolve(make_cfg("sparsity=nm")).identity.digest
    assert derived == printed and default_2_4 == resolve(make_cfg("sparsity=nm", "sparsity.rate=0.5")).identity.digest


@pytest.mark.parametrize("rate", ["0.5", "0.67", "0.7"])
def test_a_1_of_3_pattern_refuses_another_rate_naming_its_own(make_cfg, rate):
    with pytest.raises(ConfigError, match=rf"sparsity.rate={rate} .*pass sparsity.rate=0.666667"):
        resolve(make_cfg("sparsity=nm", "sparsity.n=1", "sparsity.m=3", f"sparsity.rate={rate}"))


def test_an_nm_pattern_with_n_not_below_m_is_refused_by_n_and_m(make_cfg):
    with pytest.raises(ConfigError, match=r"sparsity.n=3, sparsity.m=3: need integers 0 < n < m"):
        resolve(make_cfg("sparsity=nm", "sparsity.n=3", "sparsity.m=3"))


# --- every numeric knob is finite and within a sane range, refused at validation in one line
@pytest.mark.parametrize(
    "overrides, message",
    [
        (("allocator=erk", "allocator.power=inf"), "allocator.power=inf must be a finite number in (0, 10]"),
        (
            ("allocator=erk", "allocator.power=1e300"),
            "allocator.power=1e+300 must be a number <= 10; valid range (0, 10]",
        ),
        (("allocator=erk", "allocator.power=nan"), "allocator.power=nan must be a finite number in (0, 10]"),
        (("allocator=fcpts_erk", "allocator.temperature=inf"), "allocator.temperature=inf must be a finite number in"),
        (("allocator=fcpts_erk", "allocator.lr=1e9"), "allocator.lr=1000000000.0 must be a number <= 10"),
        (("allocator=fcpts_erk", "allocator.lambda=1e300"), "allocator.lambda=1e+300 must be a number <= 1000000.0"),
        (("allocator=fcpts_erk", "allocator.momentum=1.5"), "allocator.momentum=1.5 must be a number < 1"),
        (("allocator=fcpts_erk", "allocator.penalty=2"), "allocator.penalty=2 must be a number <= 1"),
        (("allocator=fcpts_erk", "allocator.bandwidth=inf"), "allocator.bandwidth=inf must be silverman or a finite"),
        (("allocator=owl", "allocator.m=inf"), "allocator.m=inf must be a finite number in (0, 1000]"),
        (("allocator=alphapruning", "allocator.eps=nan"), "allocator.eps=nan must be a finite number in [0, 1)"),
        (("reconstruction=block", "reconstruction.lr=inf"), "reconstruction.lr=inf must be a finite number"),
        (("reconstruction=block", "reconstruction.momentum=1"), "reconstruction.momentum=1 must be a number < 1"),
        (("reconstruction=sparsegpt", "reconstruction.percdamp=nan"), "reconstruction.percdamp=nan must be a finite"),
        (("sparsity.rate=nan",), "sparsity.rate=nan must be a finite number"),
    ],
)
def test_a_numeric_knob_outside_its_sane_range_is_refused_naming_knob_and_range(make_cfg, overrides, message):
    with pytest.raises(ConfigError) as err:
        resolve(make_cfg(*overrides))
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


@pytest.mark.parametrize("knob", ["task.eta=inf", "task.guidance_scale=-inf", "task.guidance_scale=1e9"])
def test_generation_knobs_are_bounded_too(make_cfg, knob):
    with pytest.raises(ConfigError, match=knob.split("=")[0].replace(".", r"\.") + "="):
        resolve(make_cfg("task=gen", "model=zoo_ddpm_digits", "dataset=mnist5k_gen", knob))


# --- ok only at the target rate: checked right after masking, before any reconstruction
def test_check_masked_rate_allows_the_per_layer_floors_and_nothing_more():
    import torch

    from ptsbench.sparsity.budget import TargetRateMissed, check_masked_rate

    numels = {"a": 10, "b": 10, "c": 10}
    floors = {"a": torch.tensor([0] * 6 + [1] * 4), "b": torch.tensor([0] * 6 + [1] * 4), "c": torch.ones(10)}
    # c kept dense by prune.exclude: a and b carry 0.45 * 30 / 20 = 0.675 each, floor(6.75) = 6 pruned
    report = check_masked_rate(0.45, numels, {k: v for k, v in floors.items() if k != "c"}, None, "uniform")
    assert report["masked"] == pytest.approx(12 / 30) and report["tolerance"] == pytest.approx(3 / 30)
    with pytest.raises(TargetRateMissed, match=r"achieved sparsity 0.400000 after masking, target 0.700000"):
        check_masked_rate(0.7, numels, {k: v for k, v in floors.items() if k != "c"}, None, "erk")
    nm = {"fits": torch.tensor([1, 0, 1, 0] * 2).view(1, 8), "misfit": torch.ones(1, 6)}
    ok = check_masked_rate(0.5, {"fits": 8, "misfit": 6}, nm, (2, 4), "uniform")
    assert ok["documented"] == pytest.approx(4 / 14) and ok["tolerance"] < 1 / 14  # the misfit layer stays dense
    with pytest.raises(TargetRateMissed, match=r"sparsity=nm 2:4, misfit layers dense"):
        check_masked_rate(
            0.5, {"fits": 8, "misfit": 6}, {**nm, "misfit": torch.tensor([[0, 0, 0, 1, 1, 1]])}, (2, 4), "uniform"
        )


def test_every_layer_kept_dense_is_a_failed_record_not_an_ok_one_at_rate_0(make_cfg, tmp_path):
    from ptsbench.pipeline import run
    from ptsbench.sparsity.budget import TargetRateMissed

    with pytest.raises(TargetRateMissed, match=r"achieved sparsity 0.000000 after masking, target 0.700000"):
        run(make_cfg(*TINY, "prune.keep_dense=[*]", "sparsity.rate=0.7", "reconstruction=block"))
    (path,) = (tmp_path / "out" / "records").glob("*.json")
    rec = json.loads(path.read_text())
    assert rec["status"] == "failed" and rec["error"]["phase"] == "mask" and "sparse" not in rec
    assert "tolerance" in rec["error"]["message"] and "sparsity.rate=0.7" in rec["error"]["message"]
    assert "reconstruct" not in rec["timing"]  # failed before any reconstruction work


def test_an_allocator_whose_rates_miss_the_budget_fails_before_reconstruction(make_cfg, tmp_path, monkeypatch):
    """What allocator.power=inf did before it was refused: every layer at rate 1 under a 0.7 target."""
    from ptsbench.pipeline import run
    from ptsbench.sparsity.allocators.erk import ERKAllocator
    from ptsbench.sparsity.budget import TargetRateMissed

    monkeypatch.setattr(ERKAllocator, "allocate", lambda self, layers, *a, **k: {x.name: 1.0 for x in layers})
    with pytest.raises(TargetRateMissed, match=r"achieved sparsity 1.000000 after masking, target 0.700000.*erk"):
        run(make_cfg(*TINY, "allocator=erk", "sparsity.rate=0.7", "reconstruction=block"))
    rec = json.loads(next((tmp_path / "out" / "records").glob("*.json")).read_text())
    assert rec["status"] == "failed" and "reconstruct" not in rec["timing"] and "achieved" not in rec["sparsity"]


def test_nm_with_misfit_layers_is_ok_at_its_documented_rate(make_cfg):
    from ptsbench.pipeline import run

    rec = run(make_cfg(*TINY, "sparsity=nm"))  # the zoo ResNet-20's 1-channel stem cannot hold 2:4 groups
    checked = rec["sparsity"]["after_masking"]
    assert rec["status"] == "ok" and rec["masks"]["dense_layers"] == ["conv1"]
    assert checked["documented"] < 0.5 and rec["sparsity"]["achieved"] == pytest.approx(checked["documented"], abs=1e-9)


# --- batch sizes at most the calibration set; out of memory is a failed record naming the knob to lower
RECON = (*TINY, "reconstruction=single", "reconstruction.iters=3", "reconstruction.progress=false", "sparsity.rate=0.7")


def test_a_reconstruction_batch_beyond_the_calibration_set_is_capped_and_recorded(make_cfg, tmp_path):
    from ptsbench.pipeline import run

    huge = run(make_cfg(*RECON, "reconstruction.batch_size=100000"))["reconstruction"]
    assert huge["batch_size"] == 32 and huge["batch_size_asked"] == 100000
    at_calib = run(make_cfg(*RECON, "reconstruction.batch_size=32"))["reconstruction"]
    assert "batch_size_asked" not in at_calib  # a batch within the set is used as asked
    # the cap is the whole set, which a batch of 32 also draws: the same steps, the same losses
    assert [u["loss_after"] for u in huge["units"]] == [u["loss_after"] for u in at_calib["units"]]


def test_the_unitwise_settings_keep_a_batch_within_the_calibration_set():
    import torch

    from ptsbench.reconstruction.unitwise import UnitwiseConfig, settings_from

    config = UnitwiseConfig(name="block", batch_size=16)
    assert settings_from(config, torch.device("cpu"), 32).batch_size == 16
    assert settings_from(UnitwiseConfig(name="block", batch_size=64), torch.device("cpu"), 32).batch_size == 32


def test_an_fcpts_batch_beyond_the_calibration_set_is_recorded_at_its_effective_size(make_cfg):
    from ptsbench.pipeline import run

    rec = run(make_cfg(*TINY, "allocator=fcpts_erk", "allocator.iters=2", "allocator.batch_size=100000"))
    assert rec["allocation"]["batch_size"] == 32


@pytest.mark.parametrize(
    "target, error, knob",
    [
        ("ptsbench.reconstruction.unitwise.train_unit", "torch", "reconstruction.batch_size (now 64)"),
        ("ptsbench.reconstruction.unitwise.train_unit", "python", "reconstruction.batch_size (now 64)"),
        ("ptsbench.tasks.classification.evaluate_classifier", "torch", "eval.batch_size (now 100)"),
    ],
)
def test_out_of_memory_in_a_phase_is_a_failed_record_naming_the_knob_to_lower(
    make_cfg, tmp_path, monkeypatch, target, error, knob
):
    import torch

    from ptsbench.phases import OutOfMemory
    from ptsbench.pipeline import run

    def exhausted(*_, **__):
        if error == "torch":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB\nmore torch detail")
        raise MemoryError()

    monkeypatch.setattr(target, exhausted)
    with pytest.raises(OutOfMemory, match=knob.replace("(", r"\(").replace(")", r"\)")):
        run(make_cfg(*RECON, "reconstruction.batch_size=64", "calib.num_samples=64", "eval.dense_cache=false"))
    rec = json.loads(next((tmp_path / "out" / "records").glob("*.json")).read_text())
    message = rec["error"]["message"]
    assert rec["status"] == "failed" and rec["error"]["type"] == "OutOfMemory" and "\n" not in message
    assert f"lower {knob}" in message and rec["error"]["phase"] in message


# --- a config failure is superseded once the same run (same digest) finishes ok
def test_a_config_failure_is_superseded_by_a_later_ok_run_of_the_same_digest(make_cfg, tmp_path):
    import shutil

    from ptsbench.aggregate import aggregate, main
    from ptsbench.config.failures import record_config_failure
    from ptsbench.pipeline import run

    refused = make_cfg(*TINY, "sparsity.rate=0.7", "device=cuda:7")  # the device is outside the digest
    with pytest.raises(ConfigError) as err:
        resolve(refused)
    failed_path = record_config_failure(refused, ["device=cuda:7"], err.value)
    failed = json.loads(failed_path.read_text())
    assert failed["status"] == "failed" and failed["error"]["phase"] == "config"
    records = tmp_path / "out" / "records"
    (records / "from_another_machine").mkdir()
    shutil.copy(failed_path, records / "from_another_machine" / failed_path.name)  # kept beside the later run
    assert aggregate(records, None, echo=lambda s: None)["failed"] == 1  # before the fix: reported

    ok = run(make_cfg(*TINY, "sparsity.rate=0.7", "device=cpu"))
    assert ok["status"] == "ok" and ok["digest"] == failed["digest"]
    summary = aggregate(records, None, echo=lambda s: None)
    assert summary["failed"] == 0 and summary["ok"] == 1 and summary["gaps"] == 0
    assert main([str(records), "--out", str(tmp_path / "tables"), "--no-plots", "--strict"]) == 0


def test_a_run_whose_every_reconstruction_unit_diverged_is_left_out_of_the_methods_table(tmp_path):
    from test_methods import _record

    from ptsbench.records import write_json_atomic
    from ptsbench.tables import load_runs, methods_table

    recs = [_record("m_a", 0.7, 0.50), _record("m_a", 0.7, 0.90, recon="sparsegpt", seconds=3.0)]
    diverged = _record("m_b", 0.7, 0.95, recon="sparsegpt", seconds=3.0)
    diverged["reconstruction"] = {"units": [{"unit": f"u{i}", "diverged": True} for i in range(3)]}
    partly = _record("m_c", 0.7, 0.80, recon="sparsegpt", seconds=3.0)
    partly["reconstruction"] = {"units": [{"unit": "u0", "diverged": True}, {"unit": "u1", "diverged": False}]}
    for r in [*recs, diverged, partly, _record("m_b", 0.7, 0.3), _record("m_c", 0.7, 0.4)]:
        write_json_atomic(tmp_path / f"{r['name']}.json", r)
    table = methods_table(load_runs(tmp_path))
    assert "1 run(s) left out: every reconstruction unit diverged" in table.notes
    # m_b's SparseGPT score (95) is no result: the row averages m_a and m_c (90, 80), m_b is a gap
    assert table.values.loc[("CLS", "70 ERK", "SparseGPT"), "score"] == pytest.approx(85)
