"""Sweeps lose no work: a refused job is recorded and the sweep goes on, an ok record is never replaced
by a failed re-run, and parallel workers exit when the sweep's parent dies."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ptsbench.models import zoo, zoo_checkpoint_path
from ptsbench.pipeline import run
from ptsbench.records import write_record

ROOT = Path(__file__).resolve().parents[1]
TINY = ["dataset.num_test=100", "calib.num_samples=32", "eval.batch_size=100"]


def zoo_state(seed: int | None = None) -> dict:
    if seed is None:
        return torch.load(zoo_checkpoint_path("cifar_resnet20", "mnist5k"), map_location="cpu", weights_only=True)
    torch.manual_seed(seed)
    return zoo.ZOO_ARCHS.get("cifar_resnet20")(10, 1, 28).state_dict()


def cli(*args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ptsbench.run", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def records(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((out / "records").glob("*.json"))]


@pytest.mark.parametrize(
    "launcher", [[], ["hydra/launcher=parallel", "hydra.launcher.n_jobs=2"]], ids=["basic", "parallel"]
)
def test_multirun_config_error_is_a_failed_record_and_the_sweep_goes_on(tmp_path, launcher):
    p = cli("-m", *TINY, "sparsity.rate=0.5,1.5,0.6", *launcher, f"paths.output_dir={tmp_path}")
    got = sorted((r["sparsity"]["target"], r["status"], (r.get("error") or {}).get("phase")) for r in records(tmp_path))
    assert got == [(0.5, "ok", None), (0.6, "ok", None), (1.5, "failed", "config")], p.stderr[-2000:]
    failed = next(r for r in records(tmp_path) if r["status"] == "failed")
    assert "sparsity.rate=1.5" in failed["error"]["message"] and failed["name"].endswith(failed["digest"][:12])
    assert "[failed] " in p.stdout + p.stderr and "sparsity.rate=1.5" in p.stdout + p.stderr  # names the run


def test_missing_checkpoint_case_of_a_sweep_is_recorded_and_the_sweep_goes_on(tmp_path):
    cli("-m", *TINY, "model=cifar_resnet32,zoo_resnet20", "sparsity.rate=0.5", f"paths.output_dir={tmp_path}")
    got = sorted((r["model"]["name"], r["status"]) for r in records(tmp_path))
    assert got == [("cifar_resnet32", "failed"), ("zoo_resnet20", "ok")]
    assert (
        "model.weights is required" in next(r for r in records(tmp_path) if r["status"] == "failed")["error"]["message"]
    )


def test_single_run_config_error_still_exits_2_with_one_line_and_no_record(tmp_path):
    p = cli(*TINY, "sparsity.rate=1.5", f"paths.output_dir={tmp_path}")
    assert p.returncode == 2 and p.stderr.strip().startswith("error: sparsity.rate=1.5")
    assert len(p.stderr.strip().splitlines()) == 1 and not records(tmp_path)


def _injected_nan(model):
    raise FloatingPointError("non-finite values in 1 tensor(s) of the sparse model: injected")


def test_failed_rerun_is_written_beside_the_ok_record(make_cfg, tmp_path, monkeypatch):
    ok = run(make_cfg(*TINY, "sparsity.rate=0.5"))
    path = tmp_path / "out" / "records" / f"{ok['name']}.json"
    before = path.read_bytes()
    monkeypatch.setattr("ptsbench.phases.check_finite", _injected_nan)
    with pytest.raises(FloatingPointError):
        run(make_cfg(*TINY, "sparsity.rate=0.5", "skip_finished=false", "device=cpu"))
    assert path.read_bytes() == before
    failed = json.loads(path.with_name(f"{ok['name']}.failed.json").read_text())
    assert failed["status"] == "failed" and failed["digest"] == ok["digest"]


def test_write_record_replaces_a_failed_record_with_an_ok_one(tmp_path):
    path = tmp_path / "r.json"
    write_record(path, {"status": "failed", "error": {"message": "x"}})
    write_record(path, {"status": "ok"})
    assert json.loads(path.read_text())["status"] == "ok" and not list(tmp_path.glob("*.failed.json"))


ORPHAN_SCRIPT = """
import os, sys, time
from joblib import Parallel, delayed
from ptsbench.orphans import exit_with_parent

def job(i):
    exit_with_parent(poll_s=0.2)
    print(os.getpid(), flush=True)
    time.sleep(120)

print("parent", os.getpid(), flush=True)
Parallel(n_jobs=2, backend="loky")(delayed(job)(i) for i in range(2))
"""


def test_loky_workers_exit_when_the_parent_is_killed(tmp_path):
    p = subprocess.Popen([sys.executable, "-c", ORPHAN_SCRIPT], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    lines = [p.stdout.readline().split() for _ in range(3)]
    workers = [int(parts[0]) for parts in lines if parts and parts[0] != "parent"]
    assert len(workers) == 2
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    deadline = time.time() + 10
    alive = workers
    while alive and time.time() < deadline:
        alive = [w for w in alive if _running(w)]
        time.sleep(0.2)
    for w in alive:
        os.kill(w, signal.SIGKILL)
    assert not alive


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
