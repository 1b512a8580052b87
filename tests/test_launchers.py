"""Sweeps that scale out and resume: joblib and submitit launchers, the aggregation callback,
one-GPU-per-job claims, and a killed sweep that finishes only its missing runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from ptsbench.devices import claim_device
from ptsbench.tables import build_tables, load_runs

ROOT = Path(__file__).resolve().parents[1]
TINY = ["model=zoo_resnet20", "calib.num_samples=64", "dataset.num_test=200"]
GRID = ["allocator=uniform,l2norm", "sparsity.rate=0.5,0.7"]


def sweep(out: Path, *overrides: str, timeout: int = 240) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "ptsbench.run", "-m", *TINY, *overrides, f"paths.output_dir={out}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def assert_2x2_aggregates(out: Path) -> None:
    records = sorted((out / "records").glob("*.json"))
    assert len(records) == 4
    assert all(json.loads(p.read_text())["status"] == "ok" for p in records)
    (t2, *_), _ = build_tables(load_runs(out / "records"))
    assert list(t2.values.index) == ["Uniform", "L2Norm"]
    assert list(t2.values.columns[:3]) == ["CLS 50", "CLS 70", "CLS MS"]
    assert not t2.values[["CLS 50", "CLS 70"]].isna().any().any() and not t2.gaps


@pytest.mark.slow  # a CLI subprocess (Python + Hydra + torch start-up) or a sweep
def test_joblib_launcher_runs_a_2x2_sweep_and_the_callback_aggregates(tmp_path):
    out = tmp_path / "joblib"
    sweep(out, *GRID, "hydra/launcher=parallel", "hydra.launcher.n_jobs=2", "hydra/callbacks=aggregate")
    assert "JoblibLauncher" in (out / "multirun" / "multirun.yaml").read_text()
    assert_2x2_aggregates(out)
    # the on_multirun_end callback wrote the tables and figures
    assert "### Table 2:" in (out / "tables" / "tables.md").read_text()
    assert (out / "tables" / "plots" / "rate_curves_by_allocator.png").stat().st_size > 0


@pytest.mark.slow  # a CLI subprocess (Python + Hydra + torch start-up) or a sweep
def test_submitit_local_launcher_runs_a_2x2_sweep(tmp_path):
    out = tmp_path / "submitit"
    sweep(out, *GRID, "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10")
    assert list((out / "multirun" / ".submitit").iterdir())  # the jobs really went through submitit
    assert_2x2_aggregates(out)


@pytest.mark.slow  # a CLI subprocess (Python + Hydra + torch start-up) or a sweep
def test_killed_sweep_resumes_with_only_the_missing_runs(tmp_path):
    out = tmp_path / "resume"
    cmd = [
        sys.executable,
        "-m",
        "ptsbench.run",
        "-m",
        "experiment=demo_alloc",
        *TINY,
        "allocator=uniform",
        "sparsity.rate=0.5,0.6,0.7",
        f"paths.output_dir={out}",
    ]
    first = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    records = out / "records"
    try:
        deadline = time.monotonic() + 180
        while not list(records.glob("*.json")):
            assert first.poll() is None and time.monotonic() < deadline, "sweep ended before writing a record"
            time.sleep(0.1)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    done = {p: (p.stat().st_mtime_ns, json.loads(p.read_text())["created"]) for p in records.glob("*.json")}
    assert 1 <= len(done) < 3

    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    for p, (mtime, created) in done.items():
        assert p.stat().st_mtime_ns == mtime and json.loads(p.read_text())["created"] == created
        assert f"[skip] {p.stem} already finished" in log
    assert log.count("[done]") == 3 - len(done)
    rates = sorted(json.loads(p.read_text())["sparsity"]["target"] for p in records.glob("*.json"))
    assert rates == [0.5, 0.6, 0.7]
    (t2, *_), _ = build_tables(load_runs(records))
    assert not t2.gaps and list(t2.values.columns[:3]) == ["CLS 50", "CLS 60", "CLS 70"]


def test_each_job_claims_a_free_gpu_and_waits_when_all_are_taken(tmp_path):
    gpus = ["3", "5"]  # physical ids, e.g. CUDA_VISIBLE_DEVICES=3,5
    with claim_device("auto", gpus, tmp_path) as a, claim_device("auto", gpus, tmp_path) as b:
        assert (a, b) == ("cuda:0", "cuda:1")
        got = []
        waiter = threading.Thread(target=lambda: got.append(_claim_once(gpus, tmp_path)))
        waiter.start()
        time.sleep(0.3)
        assert not got  # both GPUs are held: the third job waits
    waiter.join(timeout=5)
    assert got == ["cuda:0"]
    with claim_device("auto", gpus, tmp_path, start=1) as c:
        assert c == "cuda:1"  # jobs start probing at their job number
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu-3.lock", "gpu-5.lock"]


def _claim_once(gpus, lock_dir):
    with claim_device("auto", gpus, lock_dir, poll_s=0.05) as dev:
        return dev


def test_explicit_device_or_single_gpu_claims_nothing(tmp_path):
    with claim_device("cuda:1", ["0", "1"], tmp_path) as d1, claim_device("auto", ["0"], tmp_path) as d2:
        assert (d1, d2) == ("cuda:1", "auto")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("experiment", ["table2", "table3", "table4"])
def test_paper_table_experiments_compose(experiment):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"experiment={experiment}"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    assert "aggregate_tables" in cfg.hydra.callbacks and cfg.paths.output_dir == "outputs/paper"
    assert params["sparsity.rate"] == "0.5,0.6,0.7,0.8"
    cases = params["+case"].split(",")
    assert len(cases) == 18 and all((ROOT / "conf" / "case" / f"{c}.yaml").exists() for c in cases)
    assert cfg.reconstruction.name == "none" or experiment == "table3"


def test_every_case_pairs_model_task_dataset_and_roots(monkeypatch):
    monkeypatch.setenv("DATA_ROOT", "/data")
    monkeypatch.setenv("WEIGHTS_ROOT", "/ckpt")
    all_cases = sorted(p.stem for p in (ROOT / "conf" / "case").glob("*.yaml"))
    # embedded_* stand-ins (debug=fast smoke runs) read the shipped digits, not DATA_ROOT
    embedded = [c for c in all_cases if c.startswith("embedded_")]
    cases = [c for c in all_cases if c not in embedded]
    assert embedded == ["embedded_cls", "embedded_det", "embedded_gen"]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfgs = {c: compose(config_name="config", overrides=["experiment=table2", f"+case={c}"]) for c in cases}
        stand_ins = {c: compose(config_name="config", overrides=["experiment=table2", f"+case={c}"]) for c in embedded}
        t6 = compose(config_name="config", overrides=["experiment=table6", "model=deit_s"])
    assert {c: (cfg.task.name, cfg.model.weights, cfg.dataset.get("root")) for c, cfg in stand_ins.items()} == {
        "embedded_cls": ("cls", "zoo", None),
        "embedded_det": ("det", "zoo", None),
        "embedded_gen": ("gen", "zoo", None),
    }
    for case, cfg in cfgs.items():
        assert case.startswith(cfg.dataset.name) and cfg.dataset.root == f"/data/{cfg.dataset.name}"
        assert (
            cfg.task.name
            == {
                "imagenet": "cls",
                "cifar10": "cls",
                "cifar100": "cls",
                "coco2017": "det",
                "voc07": "det",
                "lsun_churches": "gen",
                "lsun_bedroom": "gen",
            }[cfg.dataset.name]
        )
        if str(cfg.model.weights).startswith("/ckpt"):
            assert case in str(cfg.model.weights)
    assert cfgs["voc07_ssd_mobilenetv1"].task.metric == "map50" and cfgs["lsun_churches_ldm"].task.metric == "fid"
    assert (t6.model.name, t6.dataset.root, t6.allocator.name, t6.reconstruction.name) == (
        "deit_s",
        "/data/imagenet",
        "l2norm",
        "none",
    )


def test_launcher_options_compose():
    import ptsbench.run  # noqa: F401 - registers the ptsbench_parallel_jobs resolver
    from ptsbench.devices import default_parallel_jobs

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        slurm = compose(config_name="config", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
        local = compose(config_name="config", overrides=["hydra/launcher=parallel"], return_hydra_config=True)
    assert slurm.hydra.launcher._target_.endswith("SlurmLauncher") and slurm.hydra.launcher.gpus_per_node == 1
    assert local.hydra.launcher._target_.endswith("JoblibLauncher")
    assert local.hydra.launcher.n_jobs == default_parallel_jobs() >= 1  # no GPU here: one job per 2 cores


def test_batch_expand_is_the_sweep_hydra_would_launch():
    from ptsbench import batch

    jobs = batch.expand("demo_alloc", ["allocator=erk", "calib.seed=0,1", "++reconstruction.iters=20"])
    # the experiment sweeps 7 models x 3 allocators x 2 rates; allocator=erk replaces its allocator sweep
    assert len(jobs) == 7 * 2 * 2
    assert all(
        j[0] == "experiment=demo_alloc" and "allocator=erk" in j and "++reconstruction.iters=20" in j for j in jobs
    )
    assert {next(o for o in j if o.startswith("model=")) for j in jobs} >= {"model=zoo_resnet20", "model=zoo_vit_d96"}
    assert len({tuple(j) for j in jobs}) == len(jobs)
    assert jobs[0][1:] == [
        "model=zoo_resnet20",
        "allocator=erk",
        "sparsity.rate=0.5",
        "calib.seed=0",
        "++reconstruction.iters=20",
    ]


@pytest.mark.slow  # a sweep, then a worker pool
def test_batch_jobs_write_the_records_a_multirun_writes(tmp_path):
    from ptsbench import batch

    out = tmp_path / "sweep"
    sweep(out, *GRID)
    before = {p.name: json.loads(p.read_text())["digest"] for p in (out / "records").glob("*.json")}
    jobs = [
        [*TINY, f"allocator={a}", f"sparsity.rate={r}", f"paths.output_dir={out}"]
        for a in ("uniform", "l2norm")
        for r in (0.5, 0.7)
    ]
    bad = [*TINY, "allocator=erk", "sparsity.rate=0.5", "prune.exclude=fc", f"paths.output_dir={out}"]
    lines = []
    counts = batch.run_jobs([*jobs, bad], n_jobs=2, log=lines.append)
    # same config, same digest and file: every multirun job is found finished; the bad one fails alone
    assert counts == {"skipped": 4, "failed": 1}, lines
    after = {p.name: json.loads(p.read_text()) for p in (out / "records").glob("*.json")}
    assert {n: after[n]["digest"] for n in before} == before
    failed = [r for r in after.values() if r["status"] == "failed"]
    assert (
        len(failed) == 1
        and failed[0]["error"]["phase"] == "config"
        and "prune.exclude" in failed[0]["error"]["message"]
    )


def test_the_demo_gives_every_task_three_models_and_every_classifier_family_two_sizes():
    """Task-level verdicts need 3 models per task (tables.evidence), size robustness 2 sizes per family."""
    from ptsbench import batch
    from ptsbench.list_models import model_configs

    models = {}
    for base in ("demo_alloc", "demo_det", "demo_gen"):
        models[base] = sorted({next(o for o in j if o.startswith("model="))[6:] for j in batch.expand(base, [])})
    assert {b: len(m) for b, m in models.items()} == {"demo_alloc": 7, "demo_det": 3, "demo_gen": 3}
    families: dict[str, set[str]] = {}
    for node in model_configs():
        if str(node.name) in models["demo_alloc"]:
            families.setdefault(str(node.family), set()).add(str(node.size))
    assert families and all(len(sizes) >= 2 for sizes in families.values()), families
