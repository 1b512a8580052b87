"""The PTS pipeline behind ``ptsbench.run``: one config in, one run record out.

``run(cfg)`` resolves the config into a typed ``RunSpec`` (every check before any heavy work; bad input
is a ConfigError and writes nothing) and executes its phases, each timed into the record and named in
``error.phase`` when it fails: build model + data -> evaluate dense (cached) -> fold BN -> allocate ->
mask -> (a mask-selecting reconstruction: select and update) -> reconstruct -> check the weights ->
evaluate sparse -> deploy (size, deployable N:M layers, theoretical FLOPs; ``save.model``: the sparse
checkpoint) -> (``eval.latency``: measured dense vs sparse inference). The record is written atomically whatever happens; a failure writes ``status: failed``
with the error and no metrics, then re-raises; a record that cannot be written where it goes is written to a
fallback folder, named in the log. A run in progress is claimed (``records.claims``): a second sweep into
the same folder skips it as running elsewhere.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from . import phases
from .config.preflight import resolve_device
from .config.spec import RunSpec, resolve
from .errors import ConfigError
from .records import (
    RunRecord,
    check_record_target,
    claim_run,
    load_finished,
    peak_memory,
    write_record_or_fallback,
)
from .timing import PhaseTimer

__all__ = ["execute", "run"]

log = logging.getLogger("ptsbench")


def run(cfg: DictConfig, overrides: list[str] | None = None) -> dict:
    """Run one PTS configuration and return its record (also written under paths.records_dir)."""
    return execute(resolve(cfg, overrides))


def execute(spec: RunSpec) -> dict:
    """The phases of one resolved run; returns its record (the finished one it skipped, or a note that
    another process is computing it: a run is claimed while in progress, ``records.claims``)."""
    t_start = time.perf_counter()
    done = finished(spec)
    if done is not None:
        return done
    check_record_target(spec.identity.record_path)  # before any work: a result must have somewhere to go
    claim = claim_run(spec.identity.record_path)
    if claim.holder is not None:
        log.info("[running elsewhere] %s: claimed by %s (%s)", spec.identity.name, claim.describe(), claim.path)
        return {
            "status": "running_elsewhere",
            "name": spec.identity.name,
            "digest": spec.identity.digest,
            "claimed_by": claim.holder,
        }
    try:
        done = finished(spec)  # finished by another process between the first look and the claim
        return done if done is not None else _execute_claimed(spec, t_start)
    finally:
        claim.release()


def _execute_claimed(spec: RunSpec, t_start: float) -> dict:
    device = resolve_device(spec.device)
    torch.manual_seed(spec.seed)
    record = phases.start_record(spec, device)
    timer = PhaseTimer(record.timing)
    try:
        with timer("build"):
            state = phases.build(spec, device, record)
        with timer("dense_eval"):
            record.dense = phases.dense_metrics(spec, state)
        with timer("fold_bn"):
            phases.fold_bn(spec, state, record)
        with timer("allocate"):
            rates = phases.allocate(spec, state, record)
        with timer("mask"):
            phases.mask(spec, state, rates, record)
        if state.selector is not None:  # e.g. SparseGPT: chooses the masks itself while updating the weights
            with timer("select_update"):
                record.reconstruction = phases.reconstruct(spec, state, state.selector)
        with timer("reconstruct"):
            phases.reconstruct_and_measure(spec, state, record)
        with timer("check_weights"):
            phases.check_finite(state.model)
        with timer("sparse_eval"):
            record.sparse = state.task.evaluate_sparse(state.model, state.dense_outputs, state.data, device)
        with timer("deploy"):
            phases.deploy(spec, state, record)
        if spec.eval.latency:
            with timer("latency"):
                record.latency = phases.latency(spec, state, record)
        record.status = "ok"
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - recorded, then re-raised
        memory = phases.out_of_memory(e, spec, timer.current)  # the record names the knob to lower
        record.fail(memory or e, timer.current)
        if memory is not None:
            raise memory from e
        raise
    finally:
        if record.status == "ok" or record.error is not None:
            write_final(spec, record, device, t_start)
    record.log_summary()
    return record.to_dict()


def finished(spec: RunSpec) -> dict | None:
    """The ``ok`` record of this digest when the run is to be skipped (``skip_finished``), else None."""
    done = load_finished(spec.paths.records_dir, spec.identity.digest) if spec.skip_finished else None
    if done is None:
        return None
    log.info("[skip] %s already finished", spec.identity.name)
    return {**done, "skipped": True}


def write_final(spec: RunSpec, record: RunRecord, device: torch.device, t_start: float) -> None:
    record.timing["total"] = round(time.perf_counter() - t_start, 4)
    record.memory = peak_memory(device)
    write_record_or_fallback(spec.identity.record_path, record.to_dict(), fallback_dirs())


def fallback_dirs() -> list[Path]:
    """Where a record goes when paths.records_dir fails at the end of a run: the Hydra job's own folder,
    then ``$TMPDIR/ptsbench-records``."""
    from hydra.core.hydra_config import HydraConfig

    folders = []
    if HydraConfig.initialized():
        output_dir = OmegaConf.select(HydraConfig.get(), "runtime.output_dir", default=None)  # type: ignore[arg-type]
        if output_dir:
            folders.append(Path(str(output_dir)) / "records")
    return [*folders, Path(tempfile.gettempdir()) / "ptsbench-records"]
