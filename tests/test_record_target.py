"""A result always lands somewhere, once: the record's target is resolved and test-written before the run
(dangling symlink, symlink loop, a full disk: one line naming the path and paths.records_dir), a record
write that still fails goes to a fallback folder named in the log, and a run in progress is claimed so a
second sweep into the same folder skips it as running elsewhere."""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

import ptsbench.records.io as records_io
from ptsbench import phases
from ptsbench.config.spec import resolve
from ptsbench.errors import ConfigError
from ptsbench.pipeline import execute, run
from ptsbench.records.claims import claim_path, claim_run
from ptsbench.sweep_report import SweepReport

ROOT = Path(__file__).resolve().parents[1]
TINY = ["dataset.num_test=100", "calib.num_samples=32", "eval.batch_size=100"]


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def write_claim(record_path: Path, pid: int, host: str | None = None) -> Path:
    path = claim_path(record_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(), "time": time.time()}))
    return path


def assert_refused(cfg, *names: str) -> None:
    with pytest.raises(ConfigError) as e:
        run(cfg)
    msg = str(e.value)
    assert "\n" not in msg and "paths.records_dir" in msg and all(n in msg for n in names), msg


def test_a_dangling_records_dir_symlink_is_refused_before_the_run(make_cfg, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "records").symlink_to(tmp_path / "gone")
    assert_refused(make_cfg(*TINY, out_dir=out), str(out / "records"), str(tmp_path / "gone"))
    assert not (out / "cache" / "dense").exists()  # refused before the dense model was evaluated


def test_a_symlink_loop_and_a_dangling_record_file_are_refused(make_cfg, tmp_path):
    out = tmp_path / "out"
    (out / "records").mkdir(parents=True)
    (out / "loop").symlink_to(out / "loop")
    assert_refused(make_cfg(*TINY, f"paths.records_dir={out}/loop/records", out_dir=out), "loop")
    cfg = make_cfg(*TINY, out_dir=out)
    record = resolve(cfg).identity.record_path
    record.symlink_to(tmp_path / "elsewhere" / "x.json")
    assert_refused(cfg, record.name, "x.json")


def test_a_full_records_disk_is_refused_at_validation(make_cfg, tmp_path, monkeypatch):
    def full(folder):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(folder))

    monkeypatch.setattr(records_io, "_probe_write", full)
    assert_refused(make_cfg(*TINY, out_dir=tmp_path / "out"), "No space left on device")


def test_a_record_that_cannot_be_written_goes_to_the_fallback_folder(make_cfg, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))

    def full(path, record):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(records_io, "write_record", full)
    out = tmp_path / "out"
    rec = run(make_cfg(*TINY, out_dir=out))
    assert rec["status"] == "ok" and not list((out / "records").glob("*.json"))
    fallback = tmp_path / "tmp" / "ptsbench-records" / f"{rec['name']}.json"
    assert json.loads(fallback.read_text())["digest"] == rec["digest"]
    assert str(fallback) in caplog.text and "No space left on device" in caplog.text


def test_claims_are_exclusive_and_a_dead_claimants_claim_is_taken_over(tmp_path):
    record = tmp_path / "records" / "r.json"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        write_claim(record, sleeper.pid)
        held = claim_run(record)
        assert held.holder["pid"] == sleeper.pid
        held.release()  # not ours: left in place
        assert claim_path(record).exists()
        write_claim(record, sleeper.pid, host="another-host")
        assert claim_run(record).holder["host"] == "another-host"  # unverifiable: trusted
    finally:
        sleeper.kill()
        sleeper.wait()
    write_claim(record, dead_pid())
    mine = claim_run(record)
    assert mine.holder is None and json.loads(claim_path(record).read_text())["pid"] == os.getpid()
    assert claim_run(record).holder is None  # this process's own leftover is stale too
    mine.release()


def test_a_claimed_run_is_skipped_as_running_elsewhere(make_cfg, tmp_path):
    spec = resolve(make_cfg(*TINY, out_dir=tmp_path / "out"))
    claim = write_claim(spec.identity.record_path, os.getppid())
    rec = execute(spec)
    assert rec["status"] == "running_elsewhere" and rec["claimed_by"]["pid"] == os.getppid()
    assert not spec.identity.record_path.exists() and claim.exists()
    write_claim(spec.identity.record_path, dead_pid())  # its process died: the run is taken over
    assert execute(spec)["status"] == "ok" and spec.identity.record_path.exists()
    assert not claim.exists()  # released when finished


def test_the_claim_is_released_when_the_run_fails(make_cfg, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(phases, "allocate", broken)
    spec = resolve(make_cfg(*TINY, out_dir=tmp_path / "out"))
    with pytest.raises(RuntimeError):
        execute(spec)
    assert json.loads(spec.identity.record_path.read_text())["status"] == "failed"
    assert not claim_path(spec.identity.record_path).exists()


def test_sweep_summary_reports_a_run_claimed_by_another_sweep(tmp_path, capsys):
    records = tmp_path / "records"
    report = SweepReport()
    report.t0, report.records_dir, report.finished_before = time.time(), records, set()
    report.plan = [(["a=1"], "d1", "claimed-run"), (["a=2"], "d2", "lost-run")]
    write_claim(records / "claimed-run.json", os.getppid())
    write_claim(records / "lost-run.json", dead_pid())
    cfg = {"paths": {"output_dir": str(tmp_path)}, "hydra": {"callbacks": {}, "sweep": {"dir": str(tmp_path)}}}
    report.on_multirun_end(OmegaConf.create(cfg))
    out = capsys.readouterr().out
    assert "[summary] 0 ok, 0 skipped, 1 running elsewhere, 1 failed" in out
    assert "  running elsewhere: claimed-run" in out and "  failed: lost-run" in out


@pytest.mark.slow  # two sweeps in subprocesses
def test_two_identical_sweeps_into_one_folder_compute_each_run_once(tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "ptsbench.run", "-m", *TINY, f"paths.output_dir={out}", "sparsity.rate=0.5,0.6"]
    procs = [subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)]
    time.sleep(1.0)
    procs.append(subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), logs
    written = sum(log.count("[record] ok:") for log in logs)
    assert written == 2, logs  # each run computed by one sweep only
    assert len(list((out / "records").glob("*.json"))) == 2 and not list((out / "records").glob("*.claim"))
