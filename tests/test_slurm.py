"""Sweeps through hydra/launcher=slurm against a real one-node Slurm (scripts/slurm_local.sh), and the
launcher's parts (request checks, job watching, scontrol parsing) on their own.

The tests marked ``slurm`` share one cluster, started for the session by the script (skipped, with the
script's reason, where it cannot start: not root, no apt) and stopped at the end. Runs are tiny (ResNet-20,
100 test digits, 32 calibration images), one CPU and 2 GB each.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from ptsbench.errors import ConfigError
from ptsbench.slurm_cluster import (
    Node,
    Partition,
    Request,
    check_request,
    gpu_count,
    parse_fields,
    parse_minutes,
    parse_partitions,
    read_partition,
)
from ptsbench.slurm_watch import JobWatch, OnceFilter

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "slurm_local.sh"
PARTITION = "ptsbench"
TINY = ["model=zoo_resnet20", "dataset.num_test=100", "calib.num_samples=32"]
GRID = ["allocator=uniform,l2norm", "sparsity.rate=0.5,0.7"]
ON_SLURM = [
    "hydra/launcher=slurm",
    f"hydra.launcher.partition={PARTITION}",
    "hydra.launcher.gpus_per_node=0",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=2",
    "hydra.launcher.timeout_min=20",
]


def _free_port_pair() -> int:
    for port in range(21817, 29817, 7):
        try:
            for p in (port, port + 1):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
            return port
        except OSError:
            continue
    raise RuntimeError("no two free ports for slurmctld and slurmd")


def _script(env: dict, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=timeout)


def _daemon_pids(folder: Path) -> dict[str, int]:
    return {p.stem: int(p.read_text().strip()) for p in (folder / "run").glob("*.pid")}


def _start_cluster(folder: Path) -> dict:
    env = {**os.environ, "PTSBENCH_SLURM_DIR": str(folder), "PTSBENCH_SLURM_PORT": str(_free_port_pair())}
    started = _script(env, "start")
    if started.returncode == 3:
        pytest.skip((started.stderr.strip().splitlines() or ["slurm_local.sh cannot start here"])[-1])
    assert started.returncode == 0, started.stdout + started.stderr
    return {**env, "SLURM_CONF": str(folder / "etc" / "slurm.conf")}


def _stop_cluster(env: dict, folder: Path) -> None:
    pids = _daemon_pids(folder)
    stopped = _script(env, "stop", timeout=120)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert sorted(pids) == ["munged", "slurmctld", "slurmd"]
    assert not [n for n, pid in pids.items() if Path(f"/proc/{pid}").exists()], "a daemon outlived stop"
    assert not list((folder / "run").glob("*.pid"))


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    """Env of a running one-node cluster (SLURM_CONF set), stopped, with every daemon gone, at the end.
    Its folder is $PTSBENCH_SLURM_DIR when set (CI sets it, to stop the cluster even if pytest dies), else
    a fresh temporary one; a cluster that was already running there is used and left running."""
    folder = Path(os.environ.get("PTSBENCH_SLURM_DIR") or tmp_path_factory.mktemp("slurm"))
    running = _script({**os.environ, "PTSBENCH_SLURM_DIR": str(folder)}, "status").returncode == 0
    env = _start_cluster(folder)
    try:
        yield {**env, "OMP_NUM_THREADS": "1"}
    finally:
        if not running:
            _stop_cluster(env, folder)


def _sweep(env: dict, out: Path, *overrides: str, timeout: int = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "ptsbench.run", "-m", *TINY, *overrides, f"paths.output_dir={out}"]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def _records(out: Path) -> dict[str, dict]:
    return {r["digest"]: r for r in (json.loads(p.read_text()) for p in (out / "records").glob("*.json"))}


def _index(out: Path) -> dict:
    return json.loads((out / "multirun" / "slurm_jobs.json").read_text())


def _slurm(env: dict, *args: str) -> str:
    return subprocess.run(args, env=env, capture_output=True, text=True, check=True, timeout=60).stdout


def _assert_accounting_said_once(log: str) -> None:
    # the cluster keeps no job accounting: said once per sweep, and submitit's own warning at most once
    assert log.count("[slurm] sacct: Slurm accounting storage is disabled") == 1
    assert log.count("Bypassing sacct error") <= 1


# ---- against the cluster -------------------------------------------------------------------------------


@pytest.mark.slurm
def test_a_job_array_writes_the_records_a_local_sweep_writes(cluster, tmp_path):
    slurm = _sweep(cluster, tmp_path / "slurm", *GRID, *ON_SLURM)
    log = slurm.stdout + slurm.stderr
    assert slurm.returncode == 0, log[-3000:]
    index = _index(tmp_path / "slurm")
    arrays = {j["job_id"].split("_")[0] for j in index["jobs"]}
    assert len(index["jobs"]) == 4 and len(arrays) == 1  # one array of four tasks
    assert {j["state"] for j in index["jobs"]} == {"COMPLETED"}
    (array,) = arrays
    script = (tmp_path / "slurm" / "multirun" / ".submitit" / array / f"{array}_submission.sh").read_text()
    assert "#SBATCH --array=0-3%4" in script and f"#SBATCH --partition={PARTITION}" in script
    _assert_accounting_said_once(log)
    assert "[summary] 4 ok, 0 skipped, 0 failed" in log

    local = _sweep(cluster, tmp_path / "local", *GRID)
    assert local.returncode == 0, local.stderr[-3000:]
    on_slurm, here = _records(tmp_path / "slurm"), _records(tmp_path / "local")
    assert len(here) == 4 and sorted(on_slurm) == sorted(here)  # digest for digest
    for digest, rec in here.items():
        got = on_slurm[digest]
        assert got["status"] == rec["status"] == "ok" and got["name"] == rec["name"]
        assert (got["dense"], got["sparse"]) == (rec["dense"], rec["sparse"])  # metric for metric
        assert got["sparsity"]["achieved_per_layer"] == rec["sparsity"]["achieved_per_layer"]


@pytest.mark.slurm
def test_a_task_cancelled_mid_run_is_the_only_job_of_the_rerun(cluster, tmp_path):
    out = tmp_path / "resume"
    # ~30 s of reconstruction per task (about 500 steps/s on two CPU cores): long enough that the cancel
    # below lands while the task is still reconstructing, on a fast runner too
    grid = ["sparsity.rate=0.5,0.7", "reconstruction=block", "reconstruction.iters=1500", "reconstruction.batch_size=8"]
    cmd = [sys.executable, "-m", "ptsbench.run", "-m", *TINY, *grid, *ON_SLURM, f"paths.output_dir={out}"]
    first = subprocess.Popen(cmd, cwd=ROOT, env=cluster, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    victim, deadline = None, time.monotonic() + 240
    try:
        while victim is None:  # the second task, once its log shows it reconstructing
            assert first.poll() is None and time.monotonic() < deadline, "sweep ended before the task ran"
            logs = list((out / "multirun" / ".submitit").glob("*_1/*_1_0_log.err"))
            if logs and "recon " in logs[0].read_text(errors="replace"):
                victim = logs[0].parent.name
                _slurm(cluster, "scancel", victim)
            time.sleep(0.2)
        log, _ = first.communicate(timeout=240)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 1, log[-3000:]  # a run failed
    assert f"slurm job {victim} CANCELLED" in log and "[summary] 1 ok, 0 skipped, 1 failed" in log
    (kept,) = _records(out).values()
    assert kept["status"] == "ok" and kept["sparsity"]["target"] == 0.5
    kept_file = out / "records" / f"{kept['name']}.json"
    kept_stamp = (kept_file.stat().st_mtime_ns, kept["created"])

    rerun = _sweep(cluster, out, *grid, *ON_SLURM)
    log2 = rerun.stdout + rerun.stderr
    assert rerun.returncode == 0, log2[-3000:]
    assert "[plan] 2 runs: 1 already finished (skipped), 1 to run" in log2
    assert "[slurm] partition ptsbench: 1 job(s) to submit, 1 already finished" in log2
    index = _index(out)
    assert [j["overrides"] for j in index["jobs"]] == [
        [*TINY, "sparsity.rate=0.7", *grid[1:], f"paths.output_dir={out}"]
    ]
    assert "[summary] 1 ok, 1 skipped, 0 failed" in log2
    records = _records(out)
    assert sorted(r["sparsity"]["target"] for r in records.values()) == [0.5, 0.7]  # nothing lost
    assert len(list((out / "records").glob("*.json"))) == 2  # nothing duplicated
    assert (kept_file.stat().st_mtime_ns, json.loads(kept_file.read_text())["created"]) == kept_stamp


@pytest.mark.slurm
def test_a_failed_job_is_named_with_its_log_and_the_tables_are_built_once(cluster, tmp_path):
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not a checkpoint" * 64)
    out = tmp_path / "fail"
    p = _sweep(
        cluster,
        out,
        f"model.weights=zoo,{bad}",
        *ON_SLURM,
        "hydra.launcher.array_parallelism=1",
        "hydra/callbacks=aggregate",
    )
    log = p.stdout + p.stderr
    assert p.returncode == 1, log[-3000:]
    records = list(_records(out).values())
    (failed,) = [r for r in records if r["status"] == "failed"]
    assert failed["error"]["type"] == "ConfigError" and str(bad) in failed["error"]["message"]
    assert sum(r["status"] == "ok" for r in records) == 1
    # the summary names the failed run, its error and its log; the aggregate callback ran once, before it
    index = _index(out)
    job = next(j for j in index["jobs"] if str(bad) in " ".join(j["overrides"]))
    line = next(x for x in log.splitlines() if x.startswith(f"  failed: {failed['name']} "))
    assert "not a readable checkpoint" in line and line.endswith(f"log: {job['stderr']})")
    assert f"[record] failed: {out}/records/{failed['name']}.json" in Path(job["stderr"]).read_text()
    assert log.count("PTSBench tables from") == 1 and log.count("tables written to") == 1
    assert log.index("tables written to") < log.index("[summary] 1 ok, 0 skipped, 1 failed")
    assert f"  logs: {out}/multirun/.submitit/<job id>/" in log
    # array_parallelism=1: one task at a time, as the job array says and as slurmctld ran them
    (array,) = {j["job_id"].split("_")[0] for j in index["jobs"]}
    script = (out / "multirun" / ".submitit" / array / f"{array}_submission.sh").read_text()
    assert "#SBATCH --array=0-1%1" in script
    times = {}
    for line in _slurm(cluster, "scontrol", "show", "job", array, "-o").splitlines():
        f = parse_fields(line)
        times[f["ArrayTaskId"]] = (datetime.fromisoformat(f["StartTime"]), datetime.fromisoformat(f["EndTime"]))
    assert sorted(times) == ["0", "1"] and times["1"][0] >= times["0"][1]
    for j in index["jobs"]:  # per-job logs where the index says, each with its own run's record line
        assert Path(j["stdout"]).exists() and re.search(r"\[record\] (ok|failed): ", Path(j["stderr"]).read_text())


@pytest.mark.slurm
def test_requests_no_node_can_run_are_refused_before_submission(cluster, tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_CONF", cluster["SLURM_CONF"])
    part = read_partition(PARTITION)
    (node,) = part.nodes
    assert (node.cpus, node.gpus, part.max_time_min) == (os.cpu_count(), 0, 360.0)
    before = _slurm(cluster, "squeue", "-h", "--states=all", "-o", "%i")
    p = _sweep(cluster, tmp_path / "big", *ON_SLURM, f"hydra.launcher.cpus_per_task={node.cpus + 1}")
    assert p.returncode == 2
    assert p.stderr.strip().splitlines()[-1] == (
        f"error: hydra.launcher.cpus_per_task={node.cpus + 1}: {node.cpus + 1} CPUs per node, but partition "
        f"{PARTITION} gives a job at most {node.cpus}; use hydra.launcher.cpus_per_task<={node.cpus}"
    )
    assert _slurm(cluster, "squeue", "-h", "--states=all", "-o", "%i") == before  # nothing was submitted
    assert not (tmp_path / "big" / "multirun" / ".submitit").exists()
    # what only sbatch can tell (a feature no node has) is its one line too, not a traceback
    p = _sweep(cluster, tmp_path / "feature", *ON_SLURM, "+hydra.launcher.additional_parameters.constraint=nosuch")
    assert p.returncode == 2 and p.stderr.strip().splitlines()[-1] == (
        "error: sbatch refused the job array: sbatch: error: Batch job submission failed: Invalid feature specification"
    )
    mem_gb = node.mem_mb // 1024 + 1
    for request, message in [
        (
            Request(mem_gb=mem_gb),
            f"hydra.launcher.mem_gb={mem_gb}: partition {PARTITION} gives a job at most {node.mem_mb} MB "
            f"({node.mem_mb / 1024:.1f} GB) per node; use hydra.launcher.mem_gb<={node.mem_mb // 1024}",
        ),
        (
            Request(gpus_per_node=1),
            f"hydra.launcher.gpus_per_node=1: partition {PARTITION} has at most 0 GPU(s) per node; use "
            "hydra.launcher.gpus_per_node=0 (no node of it has a GPU), or a GPU partition (hydra.launcher.partition=...)",
        ),
        (
            Request(timeout_min=361),
            f"hydra.launcher.timeout_min=361: above partition {PARTITION}'s MaxTime of 360 minutes; "
            "use hydra.launcher.timeout_min<=360",
        ),
    ]:
        with pytest.raises(ConfigError) as e:
            check_request(request, part)
        assert str(e.value) == message
    check_request(Request(cpus_per_task=node.cpus, mem_gb=1, gpus_per_node=0, timeout_min=360), part)


@pytest.mark.slurm
def test_a_job_that_can_never_start_is_reported_and_cancelled(cluster, tmp_path):
    done = _slurm(cluster, "sbatch", "--parsable", "-o", "/dev/null", "--wrap", "true").strip()
    for _ in range(100):  # a job that ended ok: `afternotok` on it can never be satisfied
        if "COMPLETED" in _slurm(cluster, "squeue", "-h", "--states=all", "-j", done, "-o", "%T"):
            break
        time.sleep(0.2)
    out = tmp_path / "stuck"
    p = _sweep(cluster, out, *ON_SLURM, f"+hydra.launcher.additional_parameters.dependency=afternotok:{done}")
    log = p.stdout + p.stderr
    assert p.returncode == 1, log[-3000:]
    (job,) = _index(out)["jobs"]
    assert job["state"] == "CANCELLED" and job["note"].startswith("cancelled while pending: DependencyNeverSatisfied")
    assert (
        f"[slurm] 1 job(s) pending with reason DependencyNeverSatisfied: its dependency can no longer be "
        f"satisfied, which waiting cannot change; cancelling {job['job_id']}" in log
    )
    assert f"(no record written: slurm job {job['job_id']} CANCELLED: cancelled while pending" in log
    assert not (out / "records").exists() or not list((out / "records").glob("*.json"))
    _assert_accounting_said_once(log)


@pytest.mark.slurm
def test_stop_ends_exactly_the_daemons_its_start_started(cluster, tmp_path):
    second = _start_cluster(tmp_path / "second")  # another cluster beside the session's, own folder and ports
    try:
        assert _script(second, "status").returncode == 0
    finally:
        _stop_cluster(second, tmp_path / "second")
    assert _script(second, "status").returncode == 1
    assert "idle" in _slurm(cluster, "sinfo", "-h", "-o", "%t")  # the session's cluster is untouched


# ---- the parts, without a cluster ----------------------------------------------------------------------

NODE_LINE = (
    "NodeName=gpu01 Arch=x86_64 CoresPerSocket=16 CPUAlloc=0 CPUEfctv=62 CPUTot=64 Gres=gpu:a100:4(S:0-1) "
    "NodeAddr=gpu01 OS=Linux 6.1.0 #1 SMP PREEMPT_DYNAMIC RealMemory=515000 MemSpecLimit=3000 Partitions=gpu,all"
)
PART_LINE = (
    "PartitionName=gpu AllowGroups=ALL Default=NO MaxNodes=UNLIMITED MaxTime=2-00:00:00 MaxCPUsPerNode=48 "
    "Nodes=gpu[01-02] State=UP TotalCPUs=124 MaxMemPerNode=UNLIMITED"
)


def test_scontrol_lines_parse_into_the_partition_limits():
    assert parse_fields(NODE_LINE)["OS"] == "Linux 6.1.0 #1 SMP PREEMPT_DYNAMIC"
    parts = parse_partitions(PART_LINE, NODE_LINE)
    assert parts == {
        "gpu": Partition("gpu", (Node("gpu01", 62, 512000, 4),), 2880.0, None, 48, None, False, "UP"),
    }
    assert (parse_minutes("30:00"), parse_minutes("1-2"), parse_minutes("INFINITE")) == (30.0, 1440.0 + 2, None)
    assert (gpu_count("gpu:4"), gpu_count("gpu:a100:2(S:0-1),gpu:v100:1"), gpu_count("shard:8")) == (4, 3, 0)


def test_the_partition_caps_bound_the_request_before_the_nodes_do():
    part = parse_partitions(PART_LINE, NODE_LINE)["gpu"]
    check_request(Request(cpus_per_task=12, tasks_per_node=4, mem_gb=500, gpus_per_node=4, timeout_min=2880), part)
    with pytest.raises(ConfigError, match=r"^hydra.launcher.cpus_per_task=16 \(x tasks_per_node=4\): 64 CPUs per "):
        check_request(Request(cpus_per_task=16, tasks_per_node=4), part)  # the node has 62, the partition caps 48
    with pytest.raises(ConfigError, match=r"^hydra.launcher.nodes=2: partition gpu allows at most 1 node"):
        check_request(Request(nodes=2), part)
    two = Partition("mix", (Node("a", 64, 1000, 0), Node("b", 8, 64000, 0)))
    with pytest.raises(ConfigError, match=r"^hydra.launcher.cpus_per_task/mem_gb/gpus_per_node=32/32/0: no 1 node"):
        check_request(Request(cpus_per_task=32, mem_gb=32), two)  # each fits some node, none holds both


def test_job_watch_settles_results_ended_and_stuck_jobs():
    watch = JobWatch(["7_0", "7_1", "7_2", "7_3"], grace_s=10)
    pending = {"7_0": ("RUNNING", "None"), "7_1": ("PENDING", "Resources"), "7_2": ("PENDING", "PartitionConfig")}
    assert watch.update({**pending, "7_3": ("PENDING", "Priority")}, set(), now=0) == {"7_2": "PartitionConfig"}
    assert watch.counts() == "1 running, 1 pending (Resources), 1 pending (PartitionConfig), 1 pending (Priority)"
    # 7_0 writes its result; 7_1 is cancelled; 7_2 (cancelled by the launcher) settles at once
    ended = {"7_1": ("CANCELLED", "None"), "7_2": ("CANCELLED", "None")}
    assert watch.update({**ended, "7_3": ("PENDING", "Priority")}, {"7_0"}, now=1) == {}
    assert watch.outcomes == {
        "7_0": ("COMPLETED", ""),
        "7_2": (
            "CANCELLED",
            "cancelled while pending: PartitionConfig (it asks for more than the partition's nodes or limits allow)",
        ),
    }
    watch.update(None, set(), now=20)  # squeue did not answer: nothing is decided on it
    assert watch.pending == ["7_1", "7_3"]
    watch.update(ended, set(), now=21)  # 7_1 ended at 1, past the grace now; 7_3 is gone (purged) from now on
    assert watch.outcomes["7_1"] == ("CANCELLED", "CANCELLED without a result") and watch.pending == ["7_3"]
    watch.update(ended, set(), now=30)
    assert watch.pending == ["7_3"]  # its result file may still show up
    watch.update(ended, set(), now=31)
    assert watch.outcomes["7_3"] == ("ENDED", "ended without a result; slurmctld no longer knows its state")


def test_a_repeated_warning_passes_once():
    once = OnceFilter("Bypassing sacct error")
    records = [
        logging.LogRecord("submitit", 30, "", 0, f"Call #{i} - Bypassing sacct error x", None, None) for i in range(3)
    ]
    other = logging.LogRecord("submitit", 30, "", 0, "something else", None, None)
    assert [once.filter(r) for r in records] + [once.filter(other)] == [True, False, False, True]
