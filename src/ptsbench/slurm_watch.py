"""How a submitted sweep stands: its jobs' states from ``squeue``, when each job is over, and the job list
the sweep summary reads.

Rule: a job with a result file is done; a job ``squeue --states=all`` shows ended (or no longer shows)
without one is over once a grace period passed without the file appearing (a shared filesystem may show
it late); a pending job whose reason is in ``slurm_cluster.UNRESOLVABLE`` is handed back to be cancelled.
``squeue`` works without job accounting (``sacct`` needs slurmdbd); slurmctld keeps an ended job there for
``MinJobAge`` seconds.
"""

from __future__ import annotations

import json
import logging
import subprocess
from collections import Counter
from pathlib import Path

from .slurm_cluster import ENDED, UNRESOLVABLE

INDEX = "slurm_jobs.json"  # in the sweep dir: every job of the sweep, its Slurm id, final state and logs


def job_states(array_id: str) -> dict[str, tuple[str, str]] | None:
    """{``<array>_<task>``: (state, reason)} of an array's tasks that slurmctld still knows (none once
    purged, ``MinJobAge`` after they ended); None when squeue could not answer this time."""
    try:
        proc = subprocess.run(
            ["squeue", "-h", "-r", "--states=all", "-j", array_id, "-o", "%i|%T|%r"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0:
        return {} if "Invalid job id" in proc.stderr else None
    out = {}
    for line in proc.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 3:
            out[parts[0]] = (parts[1], parts[2])
    return out


class JobWatch:
    """When each job of a sweep is over, from the result files that exist and what squeue says.

    A job with a result file is done. A job squeue shows as ended (or no longer shows) without one is
    over once ``grace_s`` passed without the file appearing (a shared filesystem may show it late).
    A job pending for an ``UNRESOLVABLE`` reason is returned by ``update`` to be cancelled."""

    def __init__(self, job_ids: list[str], grace_s: float = 30.0) -> None:
        self.pending = list(job_ids)
        self.grace_s = grace_s
        self.ended_at: dict[str, float] = {}
        self.last: dict[str, tuple[str, str]] = {}
        self.stuck: dict[str, str] = {}
        self.outcomes: dict[str, tuple[str, str]] = {}  # job id -> (state, note)

    def update(self, states: dict[str, tuple[str, str]] | None, with_result: set[str], now: float) -> dict[str, str]:
        """Settle what can be settled; return {job id: reason} of newly stuck pending jobs."""
        newly_stuck = {}
        for job_id in list(self.pending):
            if job_id in with_result:
                self._settle(job_id, "COMPLETED", "")
                continue
            if states is None:  # squeue did not answer this time
                continue
            state, reason = states.get(job_id, ("GONE", ""))
            self.last[job_id] = (state, reason)
            if state == "PENDING" and reason in UNRESOLVABLE and job_id not in self.stuck:
                self.stuck[job_id] = reason
                newly_stuck[job_id] = reason
            if state in ENDED or state == "GONE":
                first = self.ended_at.setdefault(job_id, now)
                if now - first >= self.grace_s or job_id in self.stuck:
                    self._settle(job_id, state if state != "GONE" else "ENDED", self._note(job_id, state))
        return newly_stuck

    def _note(self, job_id: str, state: str) -> str:
        if job_id in self.stuck:
            reason = self.stuck[job_id]
            return f"cancelled while pending: {reason} ({UNRESOLVABLE[reason]})"
        if state == "GONE":
            return "ended without a result; slurmctld no longer knows its state"
        return f"{state} without a result"

    def _settle(self, job_id: str, state: str, note: str) -> None:
        self.pending.remove(job_id)
        self.outcomes[job_id] = (state, note)

    def counts(self) -> str:
        """'2 running, 1 pending (Resources), 1 done' for the progress line."""
        c: Counter = Counter()
        for job_id in self.pending:
            state, reason = self.last.get(job_id, ("SUBMITTED", ""))
            c[
                f"{state.lower()} ({reason})" if state == "PENDING" and reason not in ("", "None") else state.lower()
            ] += 1
        c["done"] = len(self.outcomes)
        return ", ".join(f"{n} {what}" for what, n in c.items() if n)


class OnceFilter(logging.Filter):
    """Lets the first record whose message holds ``text`` through, and none after it."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text, self.seen = text, False

    def filter(self, record: logging.LogRecord) -> bool:
        if self.text not in record.getMessage():
            return True
        if self.seen:
            return False
        self.seen = True
        return True


def job_notes(sweep_dir: str | Path) -> tuple[dict[tuple[str, ...], str], str | None]:
    """From ``<sweep dir>/slurm_jobs.json``: {job overrides: "slurm job 12_3 CANCELLED ...; log: FILE"}
    and the line saying where the per-job logs are; ({}, None) when the sweep did not run on Slurm."""
    path = Path(sweep_dir) / INDEX
    try:
        index = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}, None
    notes = {}
    for job in index.get("jobs", []):
        what = f"slurm job {job['job_id']} {job['state']}" + (f": {job['note']}" if job.get("note") else "")
        notes[tuple(job["overrides"])] = f"{what}; log: {job['stderr']}"
    folders = sorted({str(Path(j["stderr"]).parent.parent) for j in index.get("jobs", [])})
    line = f"  logs: {', '.join(folders)}/<job id>/ (<job id>_0_log.out|err); jobs: {path}" if folders else None
    return notes, line
