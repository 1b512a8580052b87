"""``ptsbench-plan``: the cost model recovers a known one from synthetic records, the plan's jobs are the
sweep's (same digests as ``-m``), and nothing is predicted without comparable records."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from ptsbench import cost_features, plan
from ptsbench.cost_model import Sample, fit
from ptsbench.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
# the known cost model the synthetic records follow (seconds, per the cost_model docstring's terms)
EVAL, SETUP, HEURISTIC, FCPTS, BLOCK = 2e-9, 1e-6, 3e-7, 4e-10, 5e-10
MEM_A, MEM_B = 200.0, 3e-4


def model_cfg(name: str) -> dict:
    return OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "model" / f"{name}.yaml"))


def config(model: str, num_test=300, alloc="uniform", alloc_iters=0, recon="none", iters=0, batch=16) -> dict:
    return {
        "task": {"name": "cls", "metric": "top1"},
        "model": model_cfg(model),
        "dataset": {"name": "mnist5k", "num_test": num_test, "split_seed": 0},
        "eval": {"batch_size": 500, "max_samples": None},
        "calib": {"num_samples": 128, "seed": 0},
        "allocator": {"name": alloc, "iters": alloc_iters, "batch_size": 8},
        "reconstruction": {
            "name": recon,
            "iters": iters,
            "batch_size": batch,
            "input": "sparse",
            "error_correction": False,
        },
    }


def known_seconds(cfg: dict) -> dict[str, float]:
    """The known model's seconds per phase for ``cfg`` (P and F counted as the planner counts them)."""
    f = cost_features.features(cfg, "cpu")
    alloc = FCPTS * f.flops * f.alloc_work if f.alloc == "fcpts" else HEURISTIC * f.params
    return {
        "build": SETUP * f.params * 0.75,
        "fold_bn": SETUP * f.params * 0.25,
        "mask": 0.0,
        "check_weights": 0.0,
        "dense_eval": EVAL * f.flops * f.n_eval,
        "sparse_eval": EVAL * f.flops * f.n_eval,
        "allocate": alloc,
        "reconstruct": BLOCK * f.flops * f.recon_work if f.recon[0] != "none" else 0.0,
    }


def write_record(folder: Path, cfg: dict, n: int) -> None:
    timing = known_seconds(cfg)
    timing["total"] = sum(timing.values())
    params = cost_features.features(cfg, "cpu").params
    rec = {
        "status": "ok",
        "digest": f"{n:064x}",
        "name": f"synthetic-{n}",
        "config": cfg,
        "model": {"name": cfg["model"]["name"], "params": params},
        "timing": timing,
        "memory": {"host_peak_mb": MEM_A + MEM_B * params, "device_peak_mb": 0.0},
        "env": {"device": "cpu"},
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"synthetic-{n}.json").write_text(json.dumps(rec))


TRAIN = [
    config("zoo_resnet20"),
    config("zoo_resnet20", num_test=1000, alloc="fcpts_erk", alloc_iters=24),
    config("zoo_resnet20", recon="block", iters=20),
    config("zoo_resnet32", num_test=500, alloc="erk"),
    config("zoo_resnet32", recon="block", iters=40, batch=8),
    config("zoo_vit_d64", alloc="fcpts_l2norm", alloc_iters=48),
    config("zoo_vit_d64", recon="block", iters=10, batch=32),
]


@pytest.fixture
def synthetic(tmp_path):
    for n, cfg in enumerate(TRAIN):
        write_record(tmp_path / "records", cfg, n)
    return tmp_path / "records"


def test_the_fit_recovers_the_known_cost_model(synthetic):
    samples = cost_features.load_samples(synthetic)
    assert len(samples) == len(TRAIN)
    model = fit(samples)
    # cross-model coefficients are the known constants; the memory line is the known one
    assert model.coef[("task", "cpu", "cls", "eval", ())] == pytest.approx(EVAL, rel=1e-9)
    assert model.coef[("task", "cpu", "cls", "setup", ())] == pytest.approx(SETUP, rel=1e-9)
    assert model.coef[("task", "cpu", "cls", "allocate", ("fcpts",))] == pytest.approx(FCPTS, rel=1e-9)
    assert model.coef[("task", "cpu", "cls", "reconstruct", ("block",))] == pytest.approx(BLOCK, rel=1e-9)
    assert model.memory_line[("cpu", "cls")] == pytest.approx((MEM_A, MEM_B), rel=1e-6)
    # models no record has (ResNet-56 of a known family, a MobileNet of none) and new budgets of a known
    # model are predicted exactly
    assert model.coef[("family", "cpu", "cls", "resnet", "eval", ())] == pytest.approx(EVAL, rel=1e-9)
    for cfg, basis in [
        (
            config("zoo_resnet56", num_test=700, alloc="fcpts_erk", alloc_iters=100, recon="block", iters=300),
            "same family",
        ),
        (config("zoo_mobilenetv2_x0.5", alloc="fcpts_erk", alloc_iters=10, recon="block", iters=30), "other models"),
        (config("zoo_resnet20", num_test=200, recon="block", iters=77, batch=4), "same model"),
    ]:
        f = cost_features.features(cfg, "cpu")
        got = model.predict(f)
        want = known_seconds(cfg)
        assert got.seconds == pytest.approx(
            {
                "setup": want["build"] + want["fold_bn"],
                "eval": want["sparse_eval"],
                "allocate": want["allocate"],
                "reconstruct": want["reconstruct"],
            },
            rel=1e-9,
        )
        assert got.basis["reconstruct"] == basis and got.missing == []
        assert got.memory_mb == pytest.approx(MEM_A + MEM_B * f.params, rel=1e-6)


def test_a_phase_no_record_resembles_is_not_guessed(synthetic):
    model = fit(cost_features.load_samples(synthetic))
    layer = model.predict(cost_features.features(config("zoo_resnet20", recon="layer", iters=20), "cpu"))
    assert layer.missing == ["reconstruct"] and layer.total is None
    on_gpu = model.predict(cost_features.features(config("zoo_resnet20"), "nvidia h100 80gb hbm3"))
    assert on_gpu.missing == ["setup", "eval", "allocate"] and on_gpu.memory_mb is None
    # block with dense inputs: no exact record, so the block coefficient (input and correction pooled) serves
    dense = config("zoo_resnet20", recon="block", iters=20)
    dense["reconstruction"]["input"] = "dense"
    assert model.predict(cost_features.features(dense, "cpu")).basis["reconstruct"] == "same model"


def test_the_device_is_picked_from_the_records():
    f = cost_features.features(config("zoo_resnet20"), "cpu")
    samples = [Sample(f, {}, None), Sample(f.__class__(**{**f.__dict__, "device": "nvidia h100 80gb hbm3"}), {}, None)]
    assert plan.pick_device(samples, "H100") == "nvidia h100 80gb hbm3"
    with pytest.raises(ConfigError) as e:
        plan.pick_device(samples, None)
    assert str(e.value) == "--device is needed: the records ran on cpu (1 records), nvidia h100 80gb hbm3 (1 records)"
    with pytest.raises(ConfigError, match=r"^--device a100: no device of the records matches; they ran on cpu"):
        plan.pick_device(samples, "a100")


def test_the_plan_prices_a_sweep_with_the_known_model(synthetic, capsys):
    overrides = [
        "model=zoo_resnet56,zoo_vit_d64",
        "allocator=uniform",
        "sparsity.rate=0.5,0.7",
        "dataset=mnist5k",  # the synthetic records' dataset; the demo's own is fashion5k
        "paths.output_dir=/nonexistent",
    ]
    assert plan.main(["experiment=demo_alloc", *overrides, "--records", str(synthetic), "--by", "model"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "[plan] 4 runs of experiment=demo_alloc: 0 finished (records in /nonexistent/records)"
    assert out[1].startswith(f"[plan] calibrated on {len(TRAIN)} ok records from {synthetic}, device cpu")
    # each model: 2 runs of setup + eval + allocate, plus one dense evaluation
    expected = {}
    for m in ("zoo_resnet56", "zoo_vit_d64"):
        t = known_seconds(config(m))
        expected[m] = 2 * (t["build"] + t["fold_bn"] + t["sparse_eval"] + t["allocate"]) + t["dense_eval"]
    rows = {
        line.split()[1]: line.split() for line in out[3:] if line.startswith("demo_alloc ") and len(line.split()) == 10
    }
    assert {m: rows[m][2:7] for m in expected} == {m: ["2", "0", "2", "2", "0"] for m in expected}
    for m, seconds in expected.items():
        assert float(rows[m][7]) == pytest.approx(seconds / 3600, rel=0.01)
    # ResNet-56 has no record but its family has; ViT-d64 has its own: each row says what it rests on
    assert (rows["zoo_resnet56"][9], rows["zoo_vit_d64"][9], out[3].split()[-1]) == (
        "same-family",
        "same-model",
        "same-family",
    )
    total = out[3].split()
    assert total[:6] == ["demo_alloc", "4", "0", "4", "4", "0"]
    assert float(total[6]) == pytest.approx(sum(expected.values()) / 3600, rel=0.01)


def test_a_run_whose_published_weights_are_not_here_keeps_its_digest(synthetic, tmp_path, monkeypatch, capsys):
    # published weights are named by the config, not hashed into the digest: a login node without the weight
    # cache still tells finished runs apart, and prices the others
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_cache"))
    argv = ["experiment=table4", "+case=imagenet_resnet18", "sparsity.rate=0.5", "--records", str(synthetic)]
    assert plan.main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert not any("have no digest here" in line for line in out)
    row = next(line.split() for line in out if line.startswith("table4 "))
    assert row[:6] == ["table4", "1", "0", "1", "1", "0"] and row[-1] == "same-family"


def test_without_records_the_plan_says_so(tmp_path, capsys):
    assert plan.main(["experiment=demo_alloc", "model=zoo_resnet20", f"paths.output_dir={tmp_path}"]) == 0
    out = capsys.readouterr().out
    assert f"[plan] no records to calibrate on in {tmp_path}/records: no time predicted" in out
    assert "      6 x task=cls model=zoo_resnet20 reconstruction=none: no calibration records" in out


@pytest.mark.slow  # a CLI sweep, then the plan of the same sweep plus one rate
def test_the_plan_finds_the_runs_of_the_same_multirun_finished(tmp_path):
    tiny = [
        "model=zoo_resnet20",
        "allocator=uniform",
        "dataset.num_test=100",
        "calib.num_samples=32",
        f"paths.output_dir={tmp_path}",
    ]
    cmd = [sys.executable, "-m", "ptsbench.run", "-m", "experiment=demo_alloc", *tiny]
    sweep = subprocess.run([*cmd, "sparsity.rate=0.5,0.7"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert sweep.returncode == 0, sweep.stderr[-2000:]
    planned = subprocess.run(
        [sys.executable, "-m", "ptsbench.plan", "experiment=demo_alloc", *tiny, "sparsity.rate=0.5,0.6,0.7"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert planned.returncode == 0, planned.stderr[-2000:]
    lines = planned.stdout.splitlines()
    assert lines[0] == f"[plan] 3 runs of experiment=demo_alloc: 2 finished (records in {tmp_path}/records)"
    # the missing rate is priced from the two finished runs of the same model
    assert lines[3].split()[:6] == ["demo_alloc", "3", "2", "1", "1", "0"]


def test_bad_input_is_one_line_before_any_job_is_composed(capsys):
    assert plan.main(["experiment=demo_alloc", "reconstruction.iterz=3"]) == 2
    assert capsys.readouterr().err.startswith("error: reconstruction.iterz is not a knob of any reconstruction option")
    assert plan.main(["model=zoo_resnet20"]) == 2
    assert capsys.readouterr().err == "error: pass one experiment=NAME (several: experiment=table2,table3)\n"
    assert plan.main(["experiment=demo_allox"]) == 2
    assert capsys.readouterr().err == "error: In 'config': Could not find 'experiment/demo_allox'\n"
