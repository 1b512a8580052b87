"""Unit-wise reconstruction at ``single`` / ``layer`` / ``block`` granularity (paper §2.3, docs/methods.md#reconstruction).

For every unit the model's adapter lists, in execution order: capture the unit's input X (from
the dense model for ``input=dense``, from the sparse model with all earlier units already
reconstructed for ``input=sparse``) and its target Y = the dense unit on the dense input; then
train the unit's prunable weights and biases under their fixed masks to minimise the squared
error to Y (see trainer.py). ``error_correction=true`` applies Eq. 1 to the unit's masked layers
before its optimisation (see error_correction.py; Eq. 1 uses dense data only, so this equals
correcting the whole model first); with ``iters=0`` that correction is the whole reconstruction.
Every unit's loss on the full calibration set (before, after correction, after) and its
sampled training losses go into the run record. A unit whose training diverged (a non-finite
weight or loss, or a loss above twice the one it started from) gets its pre-training weights back
and ``diverged: true`` in the record.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from ..models.adapters import GRANULARITIES, GenericAdapter
from ..schemas import knob
from . import RECONSTRUCTORS, ReconstructionConfig
from .error_correction import ErrorCorrection, apply_error_correction
from .feeder import UnitFeeder
from .trainer import PRESETS, TrainSettings, tf32, train_unit
from .unit_data import UnitChain, unit_loss

INPUTS = ("sparse", "dense")
# A unit's training diverged when its loss ends non-finite or above EXPLODED x its starting loss (plus a
# floor for units that start at ~0, e.g. a layer the allocation left dense); a mere rise below that is
# left alone, so a correct run's numbers never change.
EXPLODED, LOSS_FLOOR = 2.0, 1e-6
AUTO_BOOL = ("auto", True, False)


@dataclass(frozen=True)
class UnitwiseConfig(ReconstructionConfig):
    """Knobs of the unit-wise reconstructors (conf/reconstruction/{single,layer,block}.yaml); paper §4.
    ``name`` is the unit: single | layer | block."""

    input: str = knob("sparse", choices=INPUTS)  # sparse: units see the reconstructed sparse model | dense
    error_correction: bool = knob(False)  # paper Eq. 1 on every masked layer first (iters=0: correction only)
    iters: int = knob(20000, ge=0)  # optimisation steps per unit (paper: 20,000)
    batch_size: int = knob(64, ge=1)
    optimizer: str = knob("sgd", choices=tuple(PRESETS))  # sgd (paper: momentum 0.9, lr 1e-4) | adam (public code)
    lr: float | None = knob(None, ge=0, le=1e6)  # weight learning rate; null = the optimizer preset's
    lr_bias: float | None = knob(None, ge=0, le=1e6)  # bias learning rate; null = the preset's
    momentum: float | None = knob(None, ge=0, lt=1)  # SGD momentum; null = the preset's (0.9)
    offload: bool | str = knob("auto", choices=AUTO_BOOL)  # cached unit inputs/targets on the host
    amp: bool | str = knob("auto", choices=AUTO_BOOL)  # bf16 autocast of the unit forward (auto: on CUDA)
    cuda_graphs: bool | str = knob("auto", choices=AUTO_BOOL)  # the whole training step as a CUDA graph
    channels_last: bool | str = knob("auto", choices=AUTO_BOOL)  # NHWC conv activations (auto: on CUDA)
    chunk_size: int = knob(256, ge=1)  # samples per forward when capturing activations and measuring losses
    seed: int = knob(0)  # mini-batch sampling
    progress: bool = knob(True)  # tqdm bar with ETA per unit


def _auto(value, default: bool) -> bool:
    return default if value == "auto" else bool(value)


def settings_from(config: UnitwiseConfig, device: torch.device, num_calib: int | None = None) -> TrainSettings:
    """The training settings; the batch is at most the ``num_calib`` cached samples (a larger one only
    repeats them, and its up-front indices grow with iters x batch: 20,000 x 100,000 is 16 GB)."""
    preset = PRESETS[config.optimizer]
    on_cuda = device.type == "cuda"

    def pick(knob):
        value = getattr(config, knob)
        return float(preset[knob] if value is None else value)

    return TrainSettings(
        iters=config.iters,
        batch_size=min(config.batch_size, num_calib) if num_calib else config.batch_size,
        optimizer=config.optimizer,
        lr=pick("lr"),
        lr_bias=pick("lr_bias"),
        momentum=pick("momentum"),
        amp=_auto(config.amp, on_cuda),
        cuda_graphs=_auto(config.cuda_graphs, on_cuda),
        seed=config.seed,
    )


@contextmanager
def _frozen(model):
    """No parameter of ``model`` requires grad (a unit turns on its own while it trains); restored after."""
    model.eval()
    was_trainable = {p: p.requires_grad for p in model.parameters()}
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in was_trainable.items():
            p.requires_grad_(flag)


def reconstruct(
    model, dense_model, masks, calib_inputs, config: UnitwiseConfig, device, *, adapter=None, task=None, **_
):
    """Reconstruct every unit of ``config.name`` granularity, in execution order."""
    device = torch.device(device)
    adapter = adapter or GenericAdapter()
    units = adapter.units(model, config.name)
    forward = task.forward_for_calibration if task is not None else (lambda m, x: m(x))
    settings = settings_from(config, device, len(calib_inputs))
    report = _report_head(config, settings, adapter, units)
    uncovered = sorted(set(masks) - {layer for u in units for layer in u.layers})
    report["unreconstructed_layers"] = uncovered
    t0 = time.perf_counter()
    with _frozen(model), tf32(False):  # exact fp32 targets and reported losses; training turns TF32 on
        if config.error_correction and uncovered:  # layers no unit owns still get Eq. 1
            apply_error_correction(model, dense_model, masks, calib_inputs, forward, device, uncovered)
        channels_last = _auto(config.channels_last, device.type == "cuda")
        feeder = UnitFeeder(
            model, dense_model, units, calib_inputs, forward, config.input, device, config.offload,
            config.chunk_size, channels_last, spine=adapter.spine(model),
        )  # fmt: skip
        report["offload"] = feeder.store.type != device.type
        for k, unit in enumerate(units):
            report["units"].append(
                _reconstruct_unit(k, len(units), unit, model, dense_model, masks, feeder, settings, config)
            )
        report["sparse_input_shortcuts"] = feeder.shortcuts
        report["sparse_input_block_captures"] = feeder.spine_captures
        report["diverged_units"] = [u["unit"] for u in report["units"] if u.get("diverged")]
    report["seconds"] = round(time.perf_counter() - t0, 3)
    return report


def _report_head(config: UnitwiseConfig, settings: TrainSettings, adapter, units) -> dict:
    return {
        "name": config.name,
        "granularity": config.name,
        "input": config.input,
        "error_correction": config.error_correction,
        "iters": settings.iters,
        "batch_size": settings.batch_size,  # the effective one: at most the calibration set
        **({"batch_size_asked": config.batch_size} if config.batch_size != settings.batch_size else {}),
        "optimizer": settings.optimizer,
        "lr": settings.lr,
        "lr_bias": settings.lr_bias,
        "amp_bf16": settings.amp,
        "cuda_graphs": settings.cuda_graphs,
        "adapter": adapter.family,
        "num_units": len(units),
        "units": [],
    }


def _reconstruct_unit(k, n_units, unit, model, dense_model, masks, feeder, settings, config) -> dict:
    t0 = time.perf_counter()
    device, chunk = feeder.device, feeder.kw["chunk_size"]
    ec = ErrorCorrection(model, dense_model, masks, unit.layers) if config.error_correction else None
    x, y = feeder.tensors(unit, ec.measuring() if ec else None)
    chain = UnitChain(model, unit.modules)
    entry = {
        "unit": unit.name,
        "kind": unit.kind,
        "layers": list(unit.layers),
        "loss_before": unit_loss(chain, x, y, device, chunk),
    }
    if ec is not None:
        ec.apply()
        entry["loss_after_correction"] = unit_loss(chain, x, y, device, chunk)
    layers = [model.get_submodule(n) for n in unit.layers]
    if settings.iters > 0 and layers:
        _train(k, n_units, unit, chain, layers, masks, x, y, feeder, settings, config.progress, entry)
    else:
        entry["loss_after"] = entry.get("loss_after_correction", entry["loss_before"])
    entry["seconds"] = round(time.perf_counter() - t0, 3)
    return entry


def _train(k, n_units, unit, chain, layers, masks, x, y, feeder, settings, progress, entry) -> None:
    """Train the unit's weights and biases under their masks; a diverged unit gets its weights back."""
    device, chunk, channels_last = feeder.device, feeder.kw["chunk_size"], feeder.kw["channels_last"]
    weights = [m.weight for m in layers]
    biases = [m.bias for m in layers if m.bias is not None]
    unit_masks = [
        masks[n] if n in masks else torch.ones_like(m.weight, dtype=torch.bool) for n, m in zip(unit.layers, layers)
    ]
    for p in weights + biases:
        p.requires_grad_(True)
    if channels_last:
        chain.to(memory_format=torch.channels_last)
    bar = tqdm(
        total=settings.iters,
        desc=f"recon {k + 1}/{n_units} {unit.name}",
        unit="it",
        leave=False,
        mininterval=1.0,
        disable=not progress,
    )
    t_train = time.perf_counter()
    before_training = [p.detach().clone() for p in weights + biases]
    try:
        unit_settings = TrainSettings(**{**settings.__dict__, "seed": settings.seed + k})
        entry.update(train_unit(chain, weights, unit_masks, biases, x, y, unit_settings, device, bar))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        entry["ms_per_iter"] = round(1000 * (time.perf_counter() - t_train) / settings.iters, 3)
    finally:
        bar.close()
        for p in weights + biases:
            p.requires_grad_(False)
        if channels_last:
            chain.to(memory_format=torch.contiguous_format)
    entry["loss_after"] = unit_loss(chain, x, y, device, chunk)
    start_loss = entry.get("loss_after_correction", entry["loss_before"])
    finite = all(bool(torch.isfinite(p).all()) for p in weights + biases)
    if not finite or not math.isfinite(entry["loss_after"]) or entry["loss_after"] > EXPLODED * start_loss + LOSS_FLOOR:
        # diverged (e.g. too large a lr): keep the unit as it was before training, say so in the record
        with torch.no_grad():
            for p, saved in zip(weights + biases, before_training):
                p.copy_(saved)
        entry["diverged"] = True
        entry["diverged_loss"] = _json_float(entry["loss_after"])
        entry["train_loss_trace"] = [[i, _json_float(v)] for i, v in entry.get("train_loss_trace", [])]
        entry["loss_after"] = unit_loss(chain, x, y, device, chunk)
    else:
        entry["diverged"] = False


def _json_float(v: float):
    """A loss as JSON can hold it: non-finite values as the strings 'nan', 'inf', '-inf'."""
    return v if math.isfinite(v) else str(v)


LABELS = {"single": "Single", "layer": "Layer-wise", "block": "Block-wise"}  # Table 3's rows (paper)
for _order, _granularity in enumerate(GRANULARITIES, start=1):
    RECONSTRUCTORS.register(_granularity, config=UnitwiseConfig, label=LABELS[_granularity], order=_order)(reconstruct)
