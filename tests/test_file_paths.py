"""Every config value that reaches a file or folder name stays inside the output folder and fits a file
name: Hydra's run folder and sweep subfolder, the record file, the dense cache file and the saved model;
``model.name`` is an identifier; ``~`` and ``$VARS`` in ``paths.*`` and in Hydra's folders are expanded."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig

from ptsbench.config.spec import resolve
from ptsbench.errors import ConfigError
from ptsbench.file_names import MAX_NAME, expand_path, safe_name
from ptsbench.identity import record_filename
from ptsbench.models import zoo_checkpoint_path
from ptsbench.pipeline import run
from ptsbench.sweep_report import SweepReport

ROOT = Path(__file__).resolve().parents[1]
TINY = ["dataset.num_test=100", "calib.num_samples=32", "eval.batch_size=100"]


def hydra_dirs(*overrides: str) -> tuple[Path, Path, str]:
    """(run dir, sweep dir, sweep subdir) Hydra resolves for ``overrides``."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides), return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)  # resolves ${hydra:...} in the run dir names
        try:
            return Path(cfg.hydra.run.dir), Path(cfg.hydra.sweep.dir), str(cfg.hydra.sweep.subdir)
        finally:
            HydraConfig.instance().cfg = None


def test_safe_name_has_no_separator_no_dot_dot_and_a_bounded_length():
    assert safe_name("../../../../home/me/ckpt/good.pt") == "________home_me_ckpt_good.pt"
    assert safe_name(".hidden") == "_hidden"
    assert safe_name("mobilenetv2_x0.5") == "mobilenetv2_x0.5"  # ordinary names keep their spelling
    long_a, long_b = "k=" + "a" * 400, "k=" + "a" * 399 + "b"
    assert len(safe_name(long_a).encode()) <= MAX_NAME
    assert safe_name(long_a) != safe_name(long_b)  # the hash of the whole tells long names apart
    assert len(safe_name("é" * 300).encode()) <= MAX_NAME  # never cut inside a UTF-8 character
    safe_name("é" * 300).encode().decode()


def test_run_dir_and_sweep_subdir_of_a_path_value_stay_in_the_output_folder(tmp_path):
    out = tmp_path / "out"
    weights = "../../../../home/me/ckpt/good.pt"
    run_dir, sweep_dir, subdir = hydra_dirs(f"paths.output_dir={out}", f"model.weights={weights}", "sparsity.rate=0.5")
    assert run_dir.parent == out / "runs" and ".." not in run_dir.parts
    assert os.path.normpath(run_dir).startswith(str(out / "runs"))
    assert "/" not in subdir and ".." not in subdir and subdir.startswith("model.weights=")
    assert sweep_dir == out / "multirun"


def test_a_long_sweep_value_and_many_knobs_give_a_bounded_folder_name(tmp_path):
    many = [f"reconstruction.{k}={v}" for k, v in (("iters", 1), ("lr", 0.001), ("batch_size", 4))]
    many += [f"calib.num_samples={2**5}", "dataset.num_test=100", f"prune.exclude=[{','.join(['x' * 30] * 20)}]"]
    run_dir, _, subdir = hydra_dirs(f"paths.output_dir={tmp_path}", *many)
    assert len(run_dir.name.encode()) <= MAX_NAME and len(subdir.encode()) <= MAX_NAME
    run_dir.mkdir(parents=True)  # no "File name too long"


def test_record_file_name_of_hostile_choices_is_one_bounded_name_ending_in_the_digest():
    digest = "ab" * 32
    name = record_filename({"task": "cls", "model": "../../victim/" + "m" * 300}, 0.5, digest)
    assert "/" not in name and ".." not in name and len(name.encode()) <= 255
    assert name.endswith(f"-s0.5-{digest[:12]}.json")


@pytest.mark.parametrize("name", ["../../../victim/PWNED", "a/b", "..", "x" * 65, ""])
def test_model_name_must_be_an_identifier(make_cfg, name):
    with pytest.raises(ConfigError) as e:
        resolve(make_cfg(f"model.name='{name}'"))
    assert "model.name=" in str(e.value) and "\n" not in str(e.value)


def test_a_run_writes_record_dense_cache_and_model_only_under_the_output_folder(make_cfg, tmp_path, monkeypatch):
    """The weights named through ``..``: nothing is written beside them or anywhere outside ``out``."""
    ckpt_dir = tmp_path / "home" / "me" / "ckpt"
    ckpt_dir.mkdir(parents=True)
    (ckpt_dir / "good.pt").write_bytes(zoo_checkpoint_path("cifar_resnet20", "mnist5k").read_bytes())
    work = tmp_path / "a" / "b" / "c"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    out = tmp_path / "out"
    rec = run(make_cfg(*TINY, "model.weights=../../../home/me/ckpt/good.pt", "save.model=true", out_dir=out))
    assert rec["status"] == "ok"
    assert sorted(p.name for p in ckpt_dir.iterdir()) == ["good.pt"]
    assert not any(work.iterdir())
    written = [p for p in out.rglob("*") if p.is_file()]
    assert {p.suffix for p in written} >= {".json", ".safetensors"}
    assert all(p.resolve().is_relative_to(out.resolve()) and len(p.name.encode()) <= 255 for p in written)
    assert list((out / "cache" / "dense").glob("zoo_resnet20-mnist5k-*.json"))


def test_tilde_and_env_vars_are_expanded_in_paths_and_hydra_folders(tmp_path, monkeypatch, make_cfg):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("PTS_RECORDS", str(tmp_path / "recs"))
    run_dir, sweep_dir, _ = hydra_dirs("paths.output_dir='~/ptsout'", "sparsity.rate=0.5")
    assert run_dir.parent == tmp_path / "ptsout" / "runs" and sweep_dir == tmp_path / "ptsout" / "multirun"
    cfg = make_cfg("paths.output_dir='~/ptsout'", "paths.records_dir='$PTS_RECORDS'", out_dir=None)
    spec = resolve(cfg)
    assert spec.paths.output_dir == tmp_path / "ptsout" and spec.paths.cache_dir == tmp_path / "ptsout" / "cache"
    assert spec.paths.records_dir == tmp_path / "recs" and spec.identity.record_path.parent == tmp_path / "recs"
    report = SweepReport()
    report.on_multirun_start(cfg)
    assert report.records_dir == tmp_path / "recs"
    assert expand_path("~/x") == tmp_path / "x" and not (ROOT / "~").exists()


@pytest.mark.slow  # a joblib sweep in a subprocess
def test_a_joblib_worker_resolves_the_safe_sweep_subdir(tmp_path):
    """The worker resolves its job folder before the task function runs: the resolver exists there."""
    import subprocess
    import sys

    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "ptsbench.run", "-m", *TINY, f"paths.output_dir={out}", "hydra/launcher=parallel"]
    cmd += ["hydra.launcher.n_jobs=1", "model.weights=zoo,none", "sparsity.rate=0.5"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    subdirs = sorted(p.name for p in (out / "multirun").iterdir() if p.is_dir())
    assert [d.split(",model.")[-1] for d in subdirs] == [
        "weights=none,sparsity.rate=0.5",
        "weights=zoo,sparsity.rate=0.5",
    ]
    assert len([json.loads(p.read_text()) for p in (out / "records").glob("*.json")]) == 2
