"""``hydra/launcher=slurm``: submitit's Slurm launcher, checked before it submits and watched until every job is over.

What it adds to ``hydra_submitit_launcher``'s ``SlurmLauncher`` (conf/hydra/launcher/slurm.yaml):
- before submitting, the request is checked against the partition (``ptsbench.slurm_cluster``): a job
  no node can ever run is refused in one line naming the knob and the limit (exit 2);
- runs whose record is already ``ok`` (same digest) are not submitted at all: a re-run of an
  interrupted sweep submits only the missing ones;
- the jobs go out as one job array (``array_parallelism`` at a time) and are watched through their
  result files and ``squeue`` (no ``sacct`` needed): a job that ends without a result (cancelled,
  killed, out of time or memory) is reported with its state and log and the sweep goes on, so the
  summary and the ``aggregate`` callback still run once at the end; a job pending for a reason that
  cannot clear by waiting (``slurm_cluster.UNRESOLVABLE``) is reported and cancelled;
- ``<sweep dir>/slurm_jobs.json`` lists every job (overrides, Slurm id, final state, log files), and
  the sweep summary points to the logs of the runs that failed (``job_notes``);
- submitit's "Bypassing sacct error" warning (a cluster without job accounting) is shown once per sweep,
  not once per poll; on the node, torch uses the job's ``cpus_per_task`` threads.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra_plugins.hydra_submitit_launcher import submitit_launcher

from .errors import ConfigError
from .slurm_cluster import UNRESOLVABLE, Request, check_request, read_partition
from .slurm_watch import INDEX, JobWatch, OnceFilter, job_states

log = logging.getLogger("ptsbench")


def _request(params: dict) -> Request:
    gpus = params.get("gpus_per_node")
    if not gpus and params.get("gpus_per_task"):
        gpus = int(params["gpus_per_task"]) * int(params.get("tasks_per_node") or 1)
    return Request(
        cpus_per_task=params.get("cpus_per_task"),
        tasks_per_node=int(params.get("tasks_per_node") or 1),
        mem_gb=params.get("mem_gb"),
        gpus_per_node=gpus,
        timeout_min=params.get("timeout_min"),
        nodes=int(params.get("nodes") or 1),
    )


class SlurmLauncher(submitit_launcher.SlurmLauncher):
    poll_max_s = 15.0  # squeue at 2, 4, 8, then every 15 s; result files every second

    def __call__(self, *args: Any, **kwargs: Any) -> JobReturn:
        # on the node: as many torch threads as CPUs the job was given, not the node's count
        cpus = os.environ.get("SLURM_CPUS_PER_TASK")
        if cpus and cpus.isdigit():
            import torch

            torch.set_num_threads(int(cpus))
        return super().__call__(*args, **kwargs)

    def launch(self, job_overrides, initial_job_idx: int) -> list[JobReturn]:
        import submitit

        try:
            partition = read_partition(self.params.get("partition"))
            check_request(_request(self.params), partition)
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        jobs_in = [(initial_job_idx + i, list(o)) for i, o in enumerate(job_overrides)]
        finished = self._finished(jobs_in)
        todo = [(idx, o) for idx, o in jobs_in if idx not in finished]
        print(
            f"[slurm] partition {partition.name}: {len(todo)} job(s) to submit, {len(finished)} already finished",
            flush=True,
        )
        returns = {idx: JobReturn(overrides=o, status=JobStatus.COMPLETED) for idx, o in jobs_in if idx in finished}
        before = [jobs_in[i - initial_job_idx][1] for i in sorted(finished)]
        index: dict[str, list] = {"jobs": [], "finished_before": before}
        if todo:
            jobs, outcomes = self._submit_and_wait(submitit, todo)
            for (idx, o), job in zip(todo, jobs):
                returns[idx], entry = self._collect(job, o, outcomes[job.job_id])
                index["jobs"].append({"num": idx, **entry})
        from .records.io import write_json_atomic

        write_json_atomic(sweep_dir / INDEX, index)
        return [returns[idx] for idx, _ in jobs_in]

    def _submit_and_wait(self, submitit, todo):
        """Submit ``todo`` as one job array and wait until every job is over: (jobs, outcome per job id)."""
        executor = self._executor(submitit)
        once = OnceFilter("Bypassing sacct error")
        logging.getLogger("submitit").addFilter(once)
        try:
            params = [(o, "hydra.sweep.dir", idx, f"job_id_for_{idx}", self._singleton_state()) for idx, o in todo]
            try:
                jobs = executor.map_array(self, *zip(*params))
            except Exception as e:  # noqa: BLE001 - sbatch refused (an account, a QOS, a typo in a knob)
                lines = [x for x in str(e).splitlines() if "error" in x.lower()] or str(e).splitlines() or [""]
                print(f"error: sbatch refused the job array: {lines[-1].strip()}", file=sys.stderr, flush=True)
                raise SystemExit(2) from None
            arrays = sorted({j.job_id.split("_")[0] for j in jobs})
            print(f"[slurm] submitted job array {', '.join(arrays)}; logs in {jobs[0].paths.folder.parent}", flush=True)
            self._note_accounting(arrays[0])
            return jobs, self._wait(jobs, arrays)
        finally:
            logging.getLogger("submitit").removeFilter(once)

    @staticmethod
    def _collect(job, overrides, outcome) -> tuple[JobReturn, dict]:
        """One finished job's JobReturn (never raising: one job's error must not end the sweep) and index entry."""
        state, note = outcome
        ret = JobReturn(overrides=overrides, status=JobStatus.COMPLETED)
        if not note:
            try:
                got = job.results()[0]
            except Exception as e:  # noqa: BLE001 - one job's error must not end the sweep
                got = JobReturn(overrides=overrides, status=JobStatus.FAILED, _return_value=e)
            if got.status == JobStatus.COMPLETED:
                ret = got
            else:  # Hydra's sweeper would re-raise it and skip the summary and the aggregate callback
                error = got._return_value
                state, note = "FAILED", f"{type(error).__name__}: {(str(error).splitlines() or [''])[0]}"
        if note:
            print(f"[slurm] job {job.job_id} ({' '.join(overrides)}): {note}; log: {job.paths.stderr}", flush=True)
        entry = {
            "overrides": overrides,
            "job_id": job.job_id,
            "state": state,
            "note": note,
            "stdout": str(job.paths.stdout),
            "stderr": str(job.paths.stderr),
        }
        return ret, entry

    def _singleton_state(self):
        from hydra.core.singleton import Singleton

        return Singleton.get_state()

    def _executor(self, submitit):
        """submitit's executor with this launcher's knobs, as the base launcher builds it."""
        from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
        from omegaconf import OmegaConf

        init_keys = {"submitit_folder", "max_num_timeout"}
        executor = submitit.AutoExecutor(
            cluster="slurm", folder=self.params["submitit_folder"], slurm_max_num_timeout=self.params["max_num_timeout"]
        )
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(
            **{k if k in base else f"slurm_{k}": v for k, v in self.params.items() if k not in init_keys}
        )
        return executor

    def _finished(self, jobs: list[tuple[int, list[str]]]) -> set[int]:
        """Job numbers whose record is already ``ok`` with the job's digest (``skip_finished``)."""
        from omegaconf import OmegaConf

        from .sweep_report import job_identity, scan_records

        if not OmegaConf.select(self.config, "skip_finished", default=True):
            return set()
        ok = {
            d
            for d, recs in scan_records(Path(str(self.config.paths.records_dir))).items()
            if any(r["status"] == "ok" for r in recs)
        }
        if not ok:
            return set()
        done = set()
        for idx, overrides in jobs:
            try:
                digest, _ = job_identity(self.config, overrides)
            except Exception:  # noqa: BLE001 - a config error: the job itself records it
                continue
            if digest in ok:
                done.add(idx)
        return done

    @staticmethod
    def _note_accounting(array_id: str) -> None:
        """One line when the cluster keeps no job accounting (sacct fails): states then come from squeue."""
        proc: subprocess.CompletedProcess[str] | None = None
        try:
            proc = subprocess.run(["sacct", "-n", "-X", "-j", array_id], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.SubprocessError) as e:
            why = str(e)
        else:
            why = (proc.stderr.strip().splitlines() or [""])[0]
        if proc is None or proc.returncode != 0:
            print(f"[slurm] sacct: {why or 'failed'}; job states are read from squeue instead", flush=True)

    def _wait(self, jobs, arrays: list[str]) -> dict[str, tuple[str, str]]:
        """Block until every job is over (JobWatch); cancel the stuck ones; print progress when it changes."""
        watch = JobWatch([j.job_id for j in jobs])
        by_id = {j.job_id: j for j in jobs}
        delay, next_poll, shown = 2.0, 0.0, ""
        try:
            while watch.pending:
                now = time.monotonic()
                with_result = {i for i in watch.pending if by_id[i].paths.result_pickle.exists()}
                states: dict[str, tuple[str, str]] | None = None
                if now >= next_poll:
                    states = {}
                    for array in arrays:
                        got = job_states(array)
                        if got is None:
                            states = None
                            break
                        states.update(got)
                    next_poll, delay = now + delay, min(delay * 2, self.poll_max_s)
                stuck = watch.update(states, with_result, now)
                if stuck:
                    for reason in sorted(set(stuck.values())):
                        ids = sorted(i for i, r in stuck.items() if r == reason)
                        print(
                            f"[slurm] {len(ids)} job(s) pending with reason {reason}: {UNRESOLVABLE[reason]}, "
                            f"which waiting cannot change; cancelling {', '.join(ids)}",
                            flush=True,
                        )
                    subprocess.run(["scancel", *sorted(stuck)], capture_output=True, timeout=60)
                line = watch.counts()
                if line != shown and states is not None:
                    print(f"[slurm] {', '.join(arrays)}: {line}", flush=True)
                    shown = line
                if watch.pending:
                    time.sleep(1.0)
        except KeyboardInterrupt:
            print(
                f"[slurm] interrupted: the jobs keep running on the cluster (scancel {' '.join(arrays)} stops "
                "them); a re-run submits only the runs without an ok record",
                file=sys.stderr,
                flush=True,
            )
            raise
        return watch.outcomes
