"""The phases of one run, as functions of the resolved ``RunSpec`` and the run's state (``ptsbench.pipeline``
calls them in order and times each into the record).

- ``build``: the task, the data (preprocessed as the model's weights expect) and the model;
- ``dense_metrics``: the dense model's score, cached per (task, model, dataset, weights content);
- ``fold_bn``: BatchNorm folded into the convs, and the frozen dense copy the later phases compare to;
- ``allocate``: the allocator's per-layer rates (calibration inputs drawn only when something reads them);
- ``mask``: the pattern x criterion x group masks at those rates (``sparsity.mask_phase``), applied;
- ``reconstruct``: the reconstruction option (a mask-selecting one, SparseGPT, runs right after ``mask``);
- ``reconstruct_and_measure``: the unit-wise reconstruction, then the achieved sparsity counted in zeros;
- ``deploy``: the pruned model's size dense and as a sparse checkpoint, the N:M layers hardware accepts,
  theoretical FLOPs, and (``save.model``) the checkpoint beside the record;
- ``latency`` (``eval.latency``): dense vs sparse inference timed with the best backend per layer.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config.spec import RunSpec
from .data import build_data
from .data.base import DataBundle
from .export.run_model import model_sizes, save_run_model
from .file_names import safe_name
from .models import build_model
from .models.adapters import ModelAdapter, get_adapter
from .models.library import eval_preprocess
from .reconstruction import RECONSTRUCTORS
from .records import RunRecord, write_json_atomic
from .records.env import env_record
from .registry import Entry
from .sparsity import mask_phase
from .sparsity.allocators import ALLOCATORS, AllocContext
from .sparsity.budget import check_kept_zeros, check_masked_rate, rate_over_included
from .sparsity.criteria import ScoreContext
from .sparsity.deployable import deployable_report
from .sparsity.layers import PrunableLayer, fold_batchnorm, layer_infos, prunable_modules
from .sparsity.selection import apply_masks, measure_sparsity
from .speed.flops import model_flops
from .speed.latency import measure_latency
from .tasks import TASKS, Task

log = logging.getLogger("ptsbench")


@dataclass
class RunState:
    """What the phases hand on: built in ``build``, completed by the phases after it."""

    device: torch.device
    task: Task
    data: DataBundle
    model: nn.Module
    adapter: ModelAdapter
    keep_dense: list[str]
    dense_model: nn.Module | None = None
    dense_outputs: torch.Tensor | None = None  # the dense model's test outputs, what sparse fidelity compares to
    modules: dict[str, PrunableLayer] = field(default_factory=dict)  # the layers the allocator prunes
    all_modules: dict[str, PrunableLayer] = field(default_factory=dict)  # every prunable layer (excluded ones too)
    calib_inputs: torch.Tensor | None = None
    rates: dict[str, float] = field(default_factory=dict)  # per layer, as the sparsity pattern imposes them
    masks: dict[str, torch.Tensor] = field(default_factory=dict)
    selector: Entry | None = None  # a reconstruction that selects the masks itself (SparseGPT)


def start_record(spec: RunSpec, device: torch.device) -> RunRecord:
    """The record before any phase ran: what was asked for (``status: failed`` until the last phase ends)."""
    ident, model = spec.identity, spec.model
    record = RunRecord.start(
        digest=ident.digest,
        name=ident.name,
        choices=ident.choices,
        config=ident.config,
        overrides=list(spec.overrides),
        seed=spec.seed,
        calib=(spec.calib.num_samples, spec.calib.seed),
        model={"name": model.name, "arch": model.arch, "family": model.family, "size": str(model.size)},
        task=(spec.task.name, spec.task.metric),
        rate=spec.rate,
        env=env_record(device),
    )
    record.not_applicable = dict(ident.not_applicable)
    record.model["weights_sha256"] = ident.weights_sha256
    if ident.data_sha256 is not None:
        record.data = {"eval_sha256": ident.eval_data_sha256, "run_sha256": ident.data_sha256}
    return record


def build(spec: RunSpec, device: torch.device, record: RunRecord) -> RunState:
    adapter = get_adapter(spec.model.family, spec.reconstruction.name)  # before any data is read
    task = TASKS.get(spec.task.name)(spec.task, spec.eval)
    record.task["higher_is_better"] = task.higher_is_better
    data = build_data(spec.dataset, spec.calib, preprocess=eval_preprocess(spec.model), cache_dir=spec.paths.cache_dir)
    record.calibration["indices_digest"] = data.meta.get("calib_indices_digest")
    record.calibration["num_samples"] = int(len(data.calib_inputs))
    model = build_model(spec.model, data.num_classes, data.in_chans, data.img_size, data.name).to(device)
    record.model["params"] = sum(p.numel() for p in model.parameters())
    keep_dense = (list(adapter.dense_globs) if spec.prune.adapter_dense else []) + list(spec.prune.keep_dense)
    prunable_modules(model, spec.prune.exclude)  # checks the exclude globs before any heavy work
    return RunState(device, task, data, model, adapter, keep_dense)


def dense_metrics(spec: RunSpec, state: RunState) -> dict:
    """The dense model's metrics, and in ``state.dense_outputs`` its test outputs (classifiers: logits, the
    reference of the sparse agreement and KL), cached under ``paths.cache_dir/dense``: the key follows the
    task, model and dataset knobs, the weights' content and the evaluated files' content, not the paths that
    name them. Outputs are read back as plain tensors (``weights_only``: no code runs from the cache)."""
    config = spec.identity.config
    keyed: dict[str, Any] = {k: config[k] for k in ("task", "model", "dataset")}
    keyed["weights_sha256"] = spec.identity.weights_sha256
    if spec.identity.eval_data_sha256 is not None:  # the files evaluated (embedded datasets: keys as before)
        keyed["dataset_sha256"] = spec.identity.eval_data_sha256
    if spec.eval.max_samples is not None:  # a test-split prefix scores differently (absent: full-split keys)
        keyed["eval.max_samples"] = spec.eval.max_samples
    key = hashlib.sha256(json.dumps(keyed, sort_keys=True, default=str).encode()).hexdigest()[:20]
    stem = safe_name(f"{spec.model.name}-{spec.dataset.name}", limit=120)  # names from the config: a safe name
    path = spec.paths.cache_dir / "dense" / f"{stem}-{key}.json"
    outputs_path = path.with_suffix(".outputs.pt")
    if spec.eval.dense_cache and path.exists():
        cached = _read_dense_cache(path, outputs_path, spec.task.metric)
        if cached is not None:
            metrics, state.dense_outputs = cached
            return metrics
    metrics, state.dense_outputs = state.task.evaluate_dense(state.model, state.data, state.device)
    if spec.eval.dense_cache:
        if state.dense_outputs is not None:  # first: a metrics file is only trusted beside its outputs
            tmp = outputs_path.with_name(f".{outputs_path.name}.{os.getpid()}.tmp")
            outputs_path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(state.dense_outputs, tmp)
            os.replace(tmp, outputs_path)
        write_json_atomic(path, {**metrics, "has_outputs": state.dense_outputs is not None})
    return metrics


def _read_dense_cache(path: Path, outputs_path: Path, metric: str) -> tuple[dict, torch.Tensor | None] | None:
    """(metrics, outputs) from the dense cache, or None (with a warning) when either is missing or unreadable."""
    try:
        cached = json.loads(path.read_text())
        if not isinstance(cached, dict) or metric not in cached:
            log.warning("[cache] %s holds no %s; evaluating the dense model again", path, metric)
            return None
        if "has_outputs" not in cached:  # written before outputs were cached: evaluate once more
            return None
        outputs = None
        if cached.pop("has_outputs"):
            outputs = torch.load(outputs_path, map_location="cpu", weights_only=True)
            if not isinstance(outputs, torch.Tensor):
                raise ValueError("not a tensor")
        return cached, outputs
    except (OSError, ValueError, RuntimeError, pickle.UnpicklingError) as e:
        log.warning("[cache] %s is unreadable (%s); evaluating the dense model again", path, type(e).__name__)
        return None


def fold_bn(spec: RunSpec, state: RunState, record: RunRecord) -> None:
    record.folded_bn = len(fold_batchnorm(state.model) if spec.prune.fold_bn else [])
    state.dense_model = copy.deepcopy(state.model).eval().requires_grad_(False)


def reads_calibration(spec: RunSpec) -> bool:
    """Whether the run reads calibration data (else its result is the same for every calib.seed)."""
    return bool(
        ALLOCATORS.trait(spec.allocator.name, "needs_calibration", False)
        or spec.reconstruction.name != "none"
        or mask_phase.needs_calibration(spec.sparsity)
    )


def allocate(spec: RunSpec, state: RunState, record: RunRecord) -> dict[str, float]:
    model, exclude = state.model, spec.prune.exclude
    state.all_modules = prunable_modules(model, skip=state.keep_dense)
    state.modules = prunable_modules(model, exclude, skip=state.keep_dense)
    inner_rate = rate_over_included(
        spec.rate,
        sum(m.weight.numel() for m in state.all_modules.values()),
        sum(m.weight.numel() for m in state.modules.values()),
    )
    state.calib_inputs = state.data.calib_inputs
    record.calibration["used"] = reads_calibration(spec)
    if record.calibration["used"]:  # diffusion: captured from sampling
        state.calib_inputs = state.task.calibration_inputs(state.dense_model, state.data, state.device, spec.calib)
        record.calibration["num_samples"] = int(len(state.calib_inputs))
    context = AllocContext(
        model=model,
        modules=state.modules,
        calib_inputs=state.calib_inputs,
        device=state.device,
        seed=spec.seed,
        forward=state.task.forward_for_calibration,
        extras={"dense_model": state.dense_model, "adapter": state.adapter},
    )
    allocator = ALLOCATORS.get(spec.allocator.name)(spec.allocator)
    weights = {n: m.weight.detach() for n, m in state.modules.items()}
    rates = allocator.allocate(layer_infos(state.modules), weights, inner_rate, context)
    record.allocation = {"rates": rates, **context.report}
    return rates


def mask(spec: RunSpec, state: RunState, rates: dict[str, float], record: RunRecord) -> None:
    """Exact masks at the pattern's rates, applied; a mask-selecting reconstruction is noted for later."""
    state.rates, record.masks = mask_phase.pattern_rates(spec.sparsity, state.modules, rates)
    context = ScoreContext(
        dense_model=state.dense_model,
        calib_inputs=state.calib_inputs,
        device=state.device,
        forward=state.task.forward_for_calibration,
    )
    state.masks, selection = mask_phase.select_masks(spec.sparsity, state.modules, state.rates, context)
    record.masks.update(selection)
    apply_masks(state.modules, state.masks)
    # before any reconstruction: a run that prunes another rate than asked is never reported ok
    record.sparsity["after_masking"] = check_masked_rate(
        spec.rate,
        {n: m.weight.numel() for n, m in state.all_modules.items()},
        state.masks,
        spec.sparsity.nm if isinstance(spec.sparsity, mask_phase.NMConfig) else None,
        spec.allocator.name,
    )
    entry = RECONSTRUCTORS.entry(spec.reconstruction.name)
    state.selector = entry if entry.trait("selects_masks", False) else None


def reconstruct(spec: RunSpec, state: RunState, entry: Entry) -> dict:
    return entry.obj(
        state.model,
        state.dense_model,
        state.masks,
        state.calib_inputs,
        spec.reconstruction,
        state.device,
        adapter=state.adapter,
        task=state.task,
        sparsity=spec.sparsity,
    )


def reconstruct_and_measure(spec: RunSpec, state: RunState, record: RunRecord) -> None:
    """The unit-wise reconstruction (none for a mask-selecting one: it ran already), then the achieved
    sparsity, counted in exact zeros over every prunable layer."""
    if state.selector is None:
        record.reconstruction = reconstruct(spec, state, RECONSTRUCTORS.entry(spec.reconstruction.name))
    achieved = measure_sparsity(state.all_modules)
    check_kept_zeros(achieved["zeros"], achieved["total"], record.sparsity["after_masking"])
    record.sparsity.update(
        {
            "achieved": achieved["global"],
            "zeros": achieved["zeros"],
            "total": achieved["total"],
            "target_per_layer": state.rates,
            "achieved_per_layer": achieved["per_layer"],
            "excluded": list(spec.prune.exclude),
        }
    )


def check_finite(model: nn.Module) -> None:
    """A diverged reconstruction or a checkpoint holding NaN: no such result is reported as ok."""
    bad = [
        n
        for n, t in [*model.named_parameters(), *model.named_buffers()]
        if t.is_floating_point() and not bool(torch.isfinite(t).all())
    ]
    if bad:
        raise FloatingPointError(
            f"non-finite values in {len(bad)} tensor(s) of the sparse model: "
            f"{', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}"
        )


def deploy(spec: RunSpec, state: RunState, record: RunRecord) -> None:
    """What the pruned model weighs on disk, which N:M layers hardware accepts, its theoretical FLOPs, and
    (``save.model``) the model itself beside the record."""
    record.size_bytes = model_sizes(state.model, state.all_modules)
    masks = record.masks or {}
    if masks.get("pattern") == "nm":
        weights = {n: m.weight for n, m in state.modules.items()}
        masks["deployable"] = deployable_report(weights, masks["n"], masks["m"])
    if spec.save.model:
        path = save_run_model(spec.identity.record_path, state.model, record.to_dict(), state.data, state.all_modules)
        record.saved_model = path.name
    assert state.calib_inputs is not None  # set by the mask phase, before deploy and latency
    record.flops = model_flops(state.model, state.modules, state.task.forward_for_calibration, state.calib_inputs)


def latency(spec: RunSpec, state: RunState, record: RunRecord) -> dict:
    masks = record.masks or {}
    assert state.calib_inputs is not None  # set by the mask phase, before deploy and latency
    return measure_latency(
        state.model,
        state.modules,
        state.calib_inputs[: spec.eval.latency_batch_size],
        state.task.forward_for_calibration,
        state.device,
        (masks["n"], masks["m"]) if masks.get("pattern") == "nm" else None,
        repeats=spec.eval.latency_repeats,
        cache_path=spec.paths.cache_dir / "latency_backends.json",
    )


class OutOfMemory(MemoryError):
    """A phase ran out of host or device memory; the message names the knobs that shrink it."""


# phase -> the knobs whose lower values shrink its memory, first the one to lower first (a knob the run's
# option does not have is skipped)
MEMORY_KNOBS = {
    "build": ("calib.num_samples",),
    "dense_eval": ("eval.batch_size", "task.sample_batch"),
    "sparse_eval": ("eval.batch_size", "task.sample_batch"),
    "allocate": ("allocator.batch_size", "calib.num_samples"),
    "mask": ("calib.num_samples",),
    "select_update": ("reconstruction.chunk_size", "calib.num_samples"),
    "reconstruct": ("reconstruction.batch_size", "reconstruction.chunk_size", "calib.num_samples"),
    "deploy": ("calib.num_samples",),
    "latency": ("eval.latency_batch_size",),
}


def is_out_of_memory(error: BaseException) -> bool:
    """torch's (CUDA) out-of-memory error, Python's MemoryError, or a CPU allocation torch could not make."""
    text = str(error)
    return isinstance(error, (MemoryError, torch.OutOfMemoryError)) or (
        isinstance(error, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)
    )


def out_of_memory(error: BaseException, spec: RunSpec, phase: str | None) -> OutOfMemory | None:
    """The failed record's reason when ``error`` is an out-of-memory error: the phase, the first line of what
    torch said, and the knobs to lower with their values in this run; None for any other error."""
    if not is_out_of_memory(error):
        return None
    values = []
    for knob in MEMORY_KNOBS.get(phase or "", ()):
        group, _, name = knob.partition(".")
        config = getattr(spec, group)
        value = config.as_dict().get(name) if hasattr(config, "as_dict") else None
        if value is not None:
            values.append(f"{knob} (now {value})")
    said = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
    lower = f"lower {' or '.join(values)}" if values else "run it on a machine with more memory"
    return OutOfMemory(f"out of memory in phase {phase} ({type(error).__name__}: {said}); {lower}")
