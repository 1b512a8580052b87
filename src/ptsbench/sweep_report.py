"""A multirun's plan before its first job and its outcome after the last one.

``SweepReport`` is a Hydra callback, on by default (``hydra.callbacks.sweep_report`` in
conf/config.yaml). ``on_multirun_start`` expands the sweep as the basic sweeper does, composes
every job's config and computes its record digest, so it can say how many runs there are, how
many already have an ``ok`` record (they are skipped) and where the records go.
``on_multirun_end`` reads what the records say, whatever launcher ran the jobs (basic, joblib,
submitit): ``ok`` (a record written during this sweep), ``skipped`` (``ok`` before it started),
``failed`` (a failed record, or none at all), names the failed runs with their phase and error,
and says where the tables are or which command builds them.

The outcome (failed count and summary text) goes back to the CLI through the file named by
``$PTSBENCH_SWEEP_OUTCOME`` when it is set (``ptsbench.run.cli`` sets it, prints the summary after every
other callback, e.g. the tables of ``hydra/callbacks=aggregate``, so it is the sweep's last word, and exits
1 when a run failed); without it the summary is printed at once.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict

from .file_names import expand_path

OUTCOME_ENV = "PTSBENCH_SWEEP_OUTCOME"


@dataclass(frozen=True)
class Outcome:
    failed: int = 0
    summary: str | None = None


def read_outcome(path: Path) -> Outcome:
    """The outcome a sweep's summary left in ``path`` (none when no sweep ran: a single run)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return Outcome()
    return Outcome(int(data.get("failed", 0)), data.get("summary"))


def _hand_back(failed: int, summary: str) -> None:
    target = os.environ.get(OUTCOME_ENV)
    if target:
        Path(target).write_text(json.dumps({"failed": failed, "summary": summary}))
    else:
        print(summary, flush=True)


def scan_records(records_dir: Path, since: float | None = None) -> dict[str, list[dict]]:
    """digest -> [{status, name, error, mtime}] of the records under ``records_dir`` (modified at or
    after ``since`` when given); unreadable files are left out."""
    found: dict[str, list[dict]] = {}
    if not records_dir.is_dir():
        return found
    for path in sorted(records_dir.rglob("*.json")):
        try:
            mtime = path.stat().st_mtime
            if since is not None and mtime < since:
                continue
            rec = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(rec, dict) and rec.get("digest"):
            found.setdefault(rec["digest"], []).append(
                {
                    "status": rec.get("status"),
                    "name": rec.get("name", path.stem),
                    "error": rec.get("error"),
                    "mtime": mtime,
                }
            )
    return found


def sweep_jobs(config: DictConfig) -> list[list[str]]:
    """The override list of every job, expanded like ``BasicSweeper`` (config params, then the command line)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = [f"{k}={v}" for k, v in (OmegaConf.select(config, "hydra.sweeper.params") or {}).items()]
    parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
    overrides = parser.parse_overrides(params + list(config.hydra.overrides.task))
    return [job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]


def job_identity(config: DictConfig, overrides: list[str]) -> tuple[str, str]:
    """(digest, record name) the job's run will have: its config composed as the launcher will."""
    from hydra.core.global_hydra import GlobalHydra

    from .config.failures import failure_identity

    job_cfg = GlobalHydra.instance().config_loader().load_sweep_config(config, overrides)
    with open_dict(job_cfg):
        del job_cfg["hydra"]
    digest, path, _ = failure_identity(job_cfg)  # a run refused at validation is recorded under this digest too
    return digest, path.stem


def _duration(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class SweepReport(Callback):
    def __init__(self, max_listed: int = 20) -> None:
        self.max_listed = max_listed
        self.plan: list[tuple[list[str], str | None, str]] = []
        self.t0 = time.time()

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.t0 = time.time()
        self.records_dir = expand_path(config.paths.records_dir)
        self.finished_before = {
            d for d, recs in scan_records(self.records_dir).items() if any(r["status"] == "ok" for r in recs)
        }
        self.plan = []
        try:
            jobs = sweep_jobs(config)
        except Exception as e:  # noqa: BLE001 - another sweeper plugin: the summary still counts records
            print(f"[plan] sweep not expanded ({type(e).__name__}: {e}); records -> {self.records_dir}", flush=True)
            return
        for job in jobs:
            try:
                digest, name = job_identity(config, job)
            except Exception:  # noqa: BLE001 - a config error: the job itself reports it
                digest, name = None, " ".join(job)
            self.plan.append((job, digest, name))
        skip = bool(OmegaConf.select(config, "skip_finished", default=True))
        done = sum(d in self.finished_before for _, d, _ in self.plan) if skip else 0
        print(
            f"[plan] {len(self.plan)} runs: {done} already finished (skipped), {len(self.plan) - done} to run; "
            f"records -> {self.records_dir}",
            flush=True,
        )

    def _claimed_elsewhere(self, name: str) -> bool:
        """Whether another live process holds the claim on the run recorded as ``name`` (this sweep's jobs
        have released theirs by now)."""
        from .records.claims import claim_path, is_stale, read_claim

        path = claim_path(self.records_dir / f"{name}.json")
        return path.exists() and not is_stale(path, read_claim(path))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from .slurm_watch import job_notes

        new = scan_records(self.records_dir, since=self.t0 - 1.0)
        notes, logs_line = job_notes(config.hydra.sweep.dir)  # a Slurm sweep: each job's state and log
        ok, skipped, failed, elsewhere = [], [], [], []
        for job, digest, name in self.plan:
            recs = sorted(new.get(digest, []), key=lambda r: r["mtime"]) if digest else []
            if recs and recs[-1]["status"] == "ok":
                ok.append(recs[-1]["name"])
            elif recs:
                failed.append((recs[-1]["name"], recs[-1]["error"], notes.get(tuple(job))))
            elif digest in self.finished_before:
                skipped.append(name)
            elif digest and self._claimed_elsewhere(name):
                elsewhere.append(name)
            else:
                failed.append((name, None, notes.get(tuple(job))))
        if not self.plan:  # sweep not expanded: count what was written
            for recs in new.values():
                last = max(recs, key=lambda r: r["mtime"])
                (
                    ok.append(last["name"])
                    if last["status"] == "ok"
                    else failed.append((last["name"], last["error"], None))
                )
        running = f"{len(elsewhere)} running elsewhere, " if elsewhere else ""
        lines = [
            f"[summary] {len(ok)} ok, {len(skipped)} skipped, {running}{len(failed)} failed in "
            f"{_duration(time.time() - self.t0)}; records in {self.records_dir}"
        ]
        lines += [
            f"  running elsewhere: {name} (claimed by another sweep; its record appears there)" for name in elsewhere
        ]
        for name, error, note in failed[: self.max_listed]:
            why = (
                "no record written (see the job's log)"
                if not error
                else f"{error.get('phase', '?')}: {error.get('type', 'Error')}: {error.get('message', '')}".strip()
            )
            why = why.splitlines()[0] if why else ""
            if note:
                why = f"no record written: {note}" if not error else f"{why}; {note.split('; ')[-1]}"
            lines.append(f"  failed: {name} ({why})")
        if len(failed) > self.max_listed:
            lines.append(f"  ... and {len(failed) - self.max_listed} more failed runs")
        if logs_line:
            lines.append(logs_line)
        out = expand_path(config.paths.output_dir) / "tables"
        if "aggregate_tables" in (OmegaConf.select(config, "hydra.callbacks") or {}):
            lines.append(f"  tables: {out} (rebuilt by hydra/callbacks=aggregate)")
        else:
            lines.append(f"  tables: python -m ptsbench.aggregate {self.records_dir} --out {out}")
        _hand_back(len(failed), "\n".join(lines))
