"""The run pipeline end to end: records, skipping, bad input, failures (docs/records.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.errors import MissingConfigException

from ptsbench.config import spec
from ptsbench.errors import ConfigError
from ptsbench.records import validate_record
from ptsbench.run import run
from ptsbench.sparsity import mask_phase

ROOT = Path(__file__).resolve().parents[1]
FAST = ["calib.num_samples=64"]


def test_run_writes_a_valid_record_with_exact_sparsity(make_cfg, tmp_path):
    rec = run(make_cfg("allocator=erk", "sparsity.rate=0.7", *FAST))
    validate_record(rec)
    files = list((tmp_path / "out" / "records").glob("*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["digest"] == rec["digest"]
    assert rec["status"] == "ok" and rec["choices"]["allocator"] == "erk"
    sp = rec["sparsity"]
    assert sp["target"] == 0.7
    assert abs(sp["zeros"] - int(0.7 * sp["total"])) <= len(sp["target_per_layer"])
    assert set(sp["achieved_per_layer"]) == set(sp["target_per_layer"])
    assert 0.9 < rec["dense"]["top1"] <= 1.0 and 0.0 <= rec["sparse"]["top1"] <= 1.0
    # fidelity to the dense model, measured on the sparse side only (the dense model agrees with itself)
    assert set(rec["sparse"]) == {"top1", "agreement", "kl"} and set(rec["dense"]) == {"top1"}
    assert 0.0 <= rec["sparse"]["agreement"] <= 1.0 and rec["sparse"]["kl"] >= 0.0
    # at 70% some predictions move: agreement below 1 and a positive KL; top-1 cannot differ by more than
    # the disagreeing fraction
    assert rec["sparse"]["agreement"] < 1.0 and rec["sparse"]["kl"] > 0.0
    assert abs(rec["sparse"]["top1"] - rec["dense"]["top1"]) <= 1.0 - rec["sparse"]["agreement"] + 1e-12
    assert rec["calibration"]["num_samples"] == 64 and len(rec["calibration"]["indices_digest"]) == 16
    assert rec["env"]["packages"]["torch"].startswith("2.14")
    assert {"build", "dense_eval", "allocate", "mask", "sparse_eval", "total"} <= set(rec["timing"])
    assert rec["memory"]["host_peak_mb"] > 0


def test_rate_zero_keeps_the_dense_accuracy(make_cfg):
    rec = run(make_cfg("sparsity.rate=0.0", *FAST))
    assert rec["sparsity"]["zeros"] == 0
    assert rec["sparse"]["top1"] == pytest.approx(rec["dense"]["top1"], abs=0.002)  # BN folding only
    # the reference is the dense model as scored; unpruned, the sparse model differs by BN folding's rounding
    assert rec["sparse"]["agreement"] == pytest.approx(1.0, abs=0.002) and 0.0 <= rec["sparse"]["kl"] < 1e-6


def test_sparse_fidelity_reads_the_dense_outputs_from_the_cache(make_cfg, tmp_path):
    """The dense logits are cached beside the dense score, so a sparse run does not run the dense model
    again, and its agreement and KL are those of a run that evaluates the dense model itself."""
    import torch

    cached = run(make_cfg("sparsity.rate=0.6", *FAST))  # writes the cache
    (outputs,) = (tmp_path / "out" / "cache" / "dense").glob("*.outputs.pt")
    logits = torch.load(outputs, weights_only=True)
    assert logits.dtype == torch.float32 and logits.shape[1] == 10
    again = run(make_cfg("sparsity.rate=0.7", *FAST))  # reads it
    fresh = run(make_cfg("sparsity.rate=0.7", *FAST, "eval.dense_cache=false"))
    assert again["sparse"] == fresh["sparse"] and set(cached["sparse"]) == {"top1", "agreement", "kl"}
    # a cache file whose outputs went missing is evaluated again, never a sparse run without its reference
    outputs.unlink()
    third = run(make_cfg("sparsity.rate=0.5", *FAST))
    assert set(third["sparse"]) == {"top1", "agreement", "kl"} and outputs.exists()


def test_repeated_run_is_skipped_and_changed_config_is_not(make_cfg, tmp_path):
    first = run(make_cfg("sparsity.rate=0.6", *FAST))
    path = next((tmp_path / "out" / "records").glob("*.json"))
    mtime = path.stat().st_mtime_ns
    again = run(make_cfg("sparsity.rate=0.6", *FAST))
    assert again["skipped"] and again["digest"] == first["digest"]
    assert path.stat().st_mtime_ns == mtime
    other = run(make_cfg("sparsity.rate=0.6", "seed=1", *FAST))
    assert "skipped" not in other and other["digest"] != first["digest"]


def test_excluded_layers_stay_dense_and_count_in_the_total(make_cfg):
    rec = run(make_cfg("sparsity.rate=0.5", "prune.exclude=[fc,conv1]", *FAST))
    sp = rec["sparsity"]
    assert sp["achieved_per_layer"]["fc"] == 0.0 and sp["achieved_per_layer"]["conv1"] == 0.0
    assert "fc" not in sp["target_per_layer"]
    assert abs(sp["zeros"] - int(0.5 * sp["total"])) <= len(sp["target_per_layer"])


@pytest.mark.parametrize("rate", [1.0, -0.1, 1.5])
def test_rate_outside_unit_interval_is_rejected_before_work(make_cfg, tmp_path, rate):
    with pytest.raises(ConfigError, match=r"sparsity.rate=.* is outside \[0, 1\)"):
        run(make_cfg(f"sparsity.rate={rate}"))
    assert not (tmp_path / "out").exists()


def test_unknown_exclude_glob_names_the_knob(make_cfg, tmp_path):
    with pytest.raises(ConfigError, match="prune.exclude: glob 'head.*' matches no prunable layer"):
        run(make_cfg("prune.exclude=[head.*]"))
    assert not (tmp_path / "out" / "records").exists()


def test_missing_dataset_root_explains_the_fix(make_cfg):
    with pytest.raises(ConfigError, match=r"dataset.root='/no/such/dir' does not exist; point it at"):
        run(
            make_cfg(
                "task=det",
                "model=zoo_retinanet_digits",
                "model.weights=none",
                "dataset=coco2017",
                "dataset.root=/no/such/dir",
            )
        )


def test_unknown_allocator_name_lists_valid_choices(make_cfg):
    with pytest.raises(ConfigError, match="unknown allocator 'magnitude'; valid choices: .*erk.*l2norm.*uniform"):
        run(make_cfg("allocator.name=magnitude"))


def test_unknown_group_option_lists_available_options(make_cfg):
    with pytest.raises(MissingConfigException) as err:
        make_cfg("allocator=magnitude")
    assert "erk" in str(err.value) and "uniform" in str(err.value)


def test_cli_reports_bad_input_with_exit_code_2(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "ptsbench.run", "sparsity.rate=1.2", f"paths.output_dir={tmp_path}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "sparsity.rate=1.2 is outside [0, 1)" in proc.stderr


def test_failure_midway_writes_a_failed_record_without_metrics(make_cfg, tmp_path, monkeypatch):
    def broken_masks(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(mask_phase, "select_masks", broken_masks)
    with pytest.raises(RuntimeError, match="disk on fire"):
        run(make_cfg("sparsity.rate=0.5", *FAST))
    rec = json.loads(next((tmp_path / "out" / "records").glob("*.json")).read_text())
    validate_record(rec)
    assert rec["status"] == "failed" and rec["error"]["phase"] == "mask"
    assert rec["error"]["message"] == "disk on fire"
    assert set(rec["timing"]) == {"build", "dense_eval", "fold_bn", "allocate", "total"}  # phases that completed
    assert "sparse" not in rec and "dense" not in rec
    monkeypatch.undo()
    retried = run(make_cfg("sparsity.rate=0.5", *FAST))  # a failed record does not block a re-run
    assert retried["status"] == "ok" and "skipped" not in retried


def test_schema_validation_rejects_malformed_records(make_cfg):
    rec = run(make_cfg("sparsity.rate=0.5", *FAST))
    bad = {k: v for k, v in rec.items() if k != "skipped"}
    bad["status"] = "done"
    with pytest.raises(ValueError, match="schema"):
        validate_record(bad)
    no_metrics = {k: v for k, v in rec.items() if k not in ("sparse", "skipped")}
    with pytest.raises(ValueError, match="'sparse' metrics"):
        validate_record(no_metrics)


@pytest.mark.slow  # a CLI subprocess (Python + Hydra + torch start-up) or a sweep
def test_cli_multirun_writes_one_record_per_cell_in_override_named_dirs(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ptsbench.run",
            "-m",
            "allocator=uniform,l2norm",
            "sparsity.rate=0.5",
            "calib.num_samples=32",
            f"paths.output_dir={tmp_path}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    records = sorted(p.name for p in (tmp_path / "records").glob("*.json"))
    assert len(records) == 2 and any("-uniform-" in r for r in records) and any("-l2norm-" in r for r in records)
    subdirs = sorted(p.name for p in (tmp_path / "multirun").iterdir() if p.is_dir())
    assert subdirs == [
        "allocator=l2norm,calib.num_samples=32,sparsity.rate=0.5",
        "allocator=uniform,calib.num_samples=32,sparsity.rate=0.5",
    ]


def test_a_user_weight_file_is_hashed_once_per_run(make_cfg, monkeypatch, tmp_path):
    import torch

    from ptsbench.models import zoo_checkpoint_path

    weights = tmp_path / "w.pt"
    torch.save(torch.load(zoo_checkpoint_path("cifar_resnet20", "mnist5k"), weights_only=True), weights)
    hashed = []
    real = spec.weights_sha256
    monkeypatch.setattr(spec, "weights_sha256", lambda path, cache=None: hashed.append(path) or real(path, cache))
    rec = run(make_cfg(f"model.weights={weights}", "sparsity.rate=0.6", *FAST))
    assert rec["status"] == "ok" and len(hashed) == 1
    assert rec["model"]["weights_sha256"] == real(weights)
