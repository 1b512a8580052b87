"""``reconstruction=sparsegpt``: one-shot OBS pruning + update, layer by layer (Frantar & Alistarh,
ICML 2023; docs/methods.md#decisions). The allocator still decides how many weights each layer loses (the mask phase's
count); SparseGPT decides which, and updates the survivors to compensate.

Walk: the adapter's ``block`` units in execution order, each fed the output of the already pruned
and updated model (``input=sparse``, via the same UnitFeeder as the unit-wise reconstructors);
inside a unit its layers in the order the forward calls them. For each layer: accumulate
H = sum X X^T over the calibration set from the unit's forward on its sparse input (convs via
unfold, per group; see sparsity/gemm.py), restore the layer's dense (BN-folded) weights, run the
column-blocked OBS selection + update of obs.py at the layer's exact count (N:M: SparseGPT's N:M
mode) and write the result back. A grouped/depthwise conv is G independent GEMMs, solved batched.
``unit_loss: true`` also records each unit's loss to its dense output before/after (docs/methods.md#reconstruction, as
the unit-wise reconstructors do; two extra unit forwards). Recorded per layer: ||W_d X - W X||^2 (per sample-position, on the layer's sparse input X) for the
magnitude mask the mask phase left ("error_before") and after SparseGPT, count, damping, seconds.
Layers no unit covers are pruned last, their inputs captured by a forward of the whole model.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ..models.adapters import GenericAdapter
from ..schemas import knob
from ..sparsity.gemm import add_cross_gram, add_input_gram, gemm_weight
from ..sparsity.mask_phase import NMConfig
from ..sparsity.selection import nm_column_order
from . import RECONSTRUCTORS, ReconstructionConfig
from .feeder import UnitFeeder
from .obs import output_error, sparsegpt_prune
from .unit_data import UnitChain, unit_loss


@dataclass(frozen=True)
class SparseGPTConfig(ReconstructionConfig):
    """conf/reconstruction/sparsegpt.yaml."""

    blocksize: int = knob(128, ge=1)  # columns per lazy-update block (reference: 128)
    # damping added to H's diagonal, a fraction of its mean (reference); 0 is refused: with fewer samples
    # than columns H is singular and the fallback damping did worse than magnitude
    percdamp: float = knob(0.01, gt=0, lt=1)
    chunk_size: int = knob(256, ge=1)  # samples per forward when accumulating H
    offload: bool | str = knob("auto", choices=("auto", True, False))  # cached unit inputs on the host
    unit_loss: bool = knob(False)  # also record each block's loss to its dense output before/after (2 forwards)
    # what the pruned layer must reproduce: "sparse" = the dense weights on the sparse model's input
    # (reference), "dense" = the dense layer's output on the dense model's input (asymmetric)
    target: str = knob("sparse", choices=("sparse", "dense"))


class _Reached(Exception):
    """Raised by a Hessian hook to end a forward once the only layer it serves has seen its input."""


def _until_reached(fn, *args):
    try:
        fn(*args)
    except _Reached:
        pass


@torch.no_grad()
def _hessians(run_forward, modules: dict, stop: bool = False) -> tuple[dict, dict]:
    """H (G, C, C) and input-column counts of ``modules`` over one pass of ``run_forward()``.
    ``stop``: the (single, called-once) layer's hook ends each forward right after it, so the rest of
    the unit is not computed; ``run_forward`` then calls each chunk through ``_until_reached``."""
    hs: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}

    def hook(name):
        def accumulate(mod, args):
            hs[name], n = add_input_gram(mod, args[0].detach().float(), hs.get(name))
            counts[name] = counts.get(name, 0) + n
            if stop:
                raise _Reached

        return accumulate

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in modules.items()]
    try:
        run_forward()
    finally:
        for h in handles:
            h.remove()
    return hs, counts


@torch.no_grad()
def _paired_grams(run_sparse, run_dense, n_chunks: int, module, dense_module, stop: bool = False) -> tuple:
    """H = X_s X_s^T, C = X_d X_s^T and the column count for one layer, from chunk-by-chunk forwards
    of the sparse (``run_sparse(i)``) and the dense (``run_dense(i)``) model on the same samples;
    the k-th call of the dense layer pairs with the k-th call of the sparse one. ``stop``: as in
    ``_hessians``, each forward ends at the (called-once) layer."""
    h = c = None
    count = 0

    def grab(into):
        def hook(_m, a):
            into.append(a[0].detach().float())
            if stop:
                raise _Reached

        return hook

    for i in range(n_chunks):
        seen: dict[str, list] = {"s": [], "d": []}
        hs = module.register_forward_pre_hook(grab(seen["s"]))
        hd = dense_module.register_forward_pre_hook(grab(seen["d"]))
        try:
            _until_reached(run_sparse, i)
            _until_reached(run_dense, i)
        finally:
            hs.remove()
            hd.remove()
        for xs, xd in zip(seen["s"], seen["d"], strict=True):
            h, n = add_input_gram(module, xs, h)
            c = add_cross_gram(module, xd, xs, c)
            count += n
    return h, c, count


def dense_target_weight(w_dense: torch.Tensor, h: torch.Tensor, c: torch.Tensor, percdamp: float) -> torch.Tensor:
    """W' = W_d C (H + damp I)^-1 (G, R, cols): the unpruned weight whose output on the sparse input
    best matches the dense layer's output on the dense input. Since W' is that least-squares
    solution, ||W_d X_d - W X_s||^2 = const + ||(W' - W) X_s||^2 for every W, so SparseGPT on W' with
    the same H minimises the asymmetric objective (GPTAQ, Li et al. 2025, for quantisation)."""
    h = h.double().clone()
    diag = h.diagonal(dim1=-2, dim2=-1)
    diag[diag == 0] = 1.0
    h += torch.eye(h.shape[-1], dtype=h.dtype, device=h.device) * (percdamp * diag.mean(-1, keepdim=True)).unsqueeze(-1)
    rhs = torch.bmm(w_dense.double(), c.double())  # (G, R, cols)
    return torch.linalg.solve(h, rhs.transpose(1, 2)).transpose(1, 2).float()


def _call_order(run_one, modules: dict) -> tuple[list[str], set[str]]:
    """The layers in the order one forward first calls them (never-called ones last), and those it
    calls exactly once (their Hessian forwards may stop at them)."""
    calls: dict[str, int] = {}
    handles = [
        m.register_forward_pre_hook(lambda _m, _a, n=n: calls.__setitem__(n, calls.get(n, 0) + 1))
        for n, m in modules.items()
    ]
    try:
        run_one()
    finally:
        for h in handles:
            h.remove()
    return list(calls) + [n for n in modules if n not in calls], {n for n, k in calls.items() if k == 1}


@torch.no_grad()
def _prune_layer(name, module, dense_module, keep, h, n_cols, walk: _Walk, cross=None) -> dict:
    t0 = time.perf_counter()
    w_view = gemm_weight(module)
    dense = gemm_weight(dense_module).detach().float()
    k = int((~keep).sum())
    before = output_error(dense - w_view.float(), h, n_cols)
    percdamp = float(walk.config.percdamp)
    start = dense if cross is None else dense_target_weight(dense, h, cross, percdamp)
    new, new_keep, damp = sparsegpt_prune(
        start,
        h,
        k,
        blocksize=walk.config.blocksize,
        percdamp=percdamp,
        group=walk.group,
        nm=walk.nm,
        order=nm_column_order(module.weight.shape) if walk.nm else None,  # N:M groups = a position's channels
    )
    w_view.copy_(new.to(w_view.dtype))
    keep.copy_(new_keep.reshape(keep.shape))
    return {
        "layer": name,
        "pruned": k,
        "error_before": before,
        "error_after": output_error(dense - new, h, n_cols),
        "damping": damp,
        "dead_inputs": int((h.diagonal(dim1=-2, dim2=-1) == 0).sum()) * w_view.shape[1],  # zeroed, count as pruned
        "seconds": round(time.perf_counter() - t0, 4),
    }


@dataclass
class _Walk:
    """What every layer of one SparseGPT pass shares; ``todo``: the masked layers not pruned yet."""

    model: torch.nn.Module
    dense_model: torch.nn.Module
    masks: dict
    config: SparseGPTConfig
    device: torch.device
    forward: Callable[[torch.nn.Module, torch.Tensor], Any]
    group: str
    nm: tuple[int, int] | None
    todo: set = field(default_factory=set)
    layers: list = field(default_factory=list)  # the record's per-layer entries

    @property
    def chunk(self) -> int:
        return self.config.chunk_size

    @property
    def dense_target(self) -> bool:
        return self.config.target == "dense"

    def prune(self, name: str, h, count, cross) -> None:
        self.layers.append(
            _prune_layer(
                name,
                self.model.get_submodule(name),
                self.dense_model.get_submodule(name),
                self.masks[name],
                h,
                count,
                self,
                cross,
            )
        )
        self.todo.discard(name)


def reconstruct(
    model,
    dense_model,
    masks,
    calib_inputs,
    config: SparseGPTConfig,
    device,
    *,
    adapter=None,
    task=None,
    sparsity=None,
    **_,
) -> dict:
    """Prune every masked layer by SparseGPT at its mask's count (masks and weights updated in place)."""
    device = torch.device(device)
    adapter = adapter or GenericAdapter()
    walk = _Walk(
        model,
        dense_model,
        masks,
        config,
        device,
        task.forward_for_calibration if task is not None else (lambda m, x: m(x)),
        sparsity.group if sparsity is not None else "layer",
        sparsity.nm if isinstance(sparsity, NMConfig) else None,
        # layers at rate 0 (N:M misfits, dense by allocation) keep their weights: nothing to select
        todo={n for n, keep in masks.items() if not bool(keep.all())},
    )
    units = [u for u in adapter.units(model, "block") if any(n in walk.todo for n in u.layers)]
    report = {
        **{"name": "sparsegpt", "blocksize": config.blocksize, "percdamp": float(config.percdamp)},
        **{"group": walk.group, "nm": list(walk.nm) if walk.nm else None, "target": config.target},
        **{"adapter": adapter.family, "num_units": len(units), "units": [], "layers": walk.layers},
    }
    model.eval()
    t_start = time.perf_counter()
    feeder = UnitFeeder(
        model,
        dense_model,
        units,
        calib_inputs,
        walk.forward,
        "sparse",
        device,
        config.offload,
        walk.chunk,
        targets=config.unit_loss or walk.dense_target,  # otherwise only the sparse X is read
        spine=units,  # block units: the feeder verifies which one feeds the next
    )
    for unit in units:
        report["units"].append(_prune_unit(walk, unit, feeder))
    report["uncovered_layers"] = sorted(walk.todo)
    _prune_uncovered(walk, calib_inputs)
    report["unreached_layers"] = sorted(walk.todo)  # never called by any forward: magnitude mask kept
    report["seconds"] = round(time.perf_counter() - t_start, 3)
    return report


def _prune_unit(walk: _Walk, unit, feeder: UnitFeeder) -> dict:
    """The unit's masked layers in the order its forward calls them, each on the unit's sparse input."""
    t0 = time.perf_counter()
    device, chunk = walk.device, walk.chunk
    x, y = feeder.tensors(unit)
    chain = UnitChain(walk.model, unit.modules)
    entry: dict = {"unit": unit.name, "layers": []}
    if walk.config.unit_loss:
        entry["loss_before"] = unit_loss(chain, x, y, device, chunk)
    layer_mods = {n: walk.model.get_submodule(n) for n in unit.layers if n in walk.todo}

    def run_all():
        for s in range(0, len(x), chunk):
            _until_reached(chain, x.chunk(s, s + chunk).to(device))

    order, once = _call_order(lambda: chain(x.chunk(0, 1).to(device)), layer_mods)
    n_chunks = -(-len(x) // chunk)
    dense_chain, x_dense = UnitChain(walk.dense_model, unit.modules), feeder.dense_x
    for name in order:
        if walk.dense_target:
            assert x_dense is not None  # the feeder keeps the dense X when the target is dense
            h, cross, count = _paired_grams(
                lambda i: chain(x.chunk(i * chunk, (i + 1) * chunk).to(device)),
                lambda i: dense_chain(x_dense.chunk(i * chunk, (i + 1) * chunk).to(device)),
                n_chunks,
                layer_mods[name],
                walk.dense_model.get_submodule(name),
                stop=name in once,
            )
        else:
            hs, counts = _hessians(run_all, {name: layer_mods[name]}, stop=name in once)
            h, cross, count = hs.get(name), None, counts.get(name)
        if h is None:
            continue  # the unit's forward never calls it: handled with the uncovered layers
        walk.prune(name, h, count, cross)
        entry["layers"].append(name)
    if walk.config.unit_loss:
        entry["loss_after"] = unit_loss(chain, x, y, device, chunk)
    entry["seconds"] = round(time.perf_counter() - t0, 3)
    return entry


def _prune_uncovered(walk: _Walk, calib_inputs: torch.Tensor) -> None:
    """Layers no unit covers, in model order, their inputs from whole-model forwards."""
    model, chunk, device, forward = walk.model, walk.chunk, walk.device, walk.forward
    for name in [n for n in walk.masks if n in walk.todo]:
        if walk.dense_target:
            h, cross, count = _paired_grams(
                lambda i: forward(model, calib_inputs[i * chunk : (i + 1) * chunk].to(device)),
                lambda i: forward(walk.dense_model, calib_inputs[i * chunk : (i + 1) * chunk].to(device)),
                -(-len(calib_inputs) // chunk),
                model.get_submodule(name),
                walk.dense_model.get_submodule(name),
            )
        else:

            def run_model():
                for s in range(0, len(calib_inputs), chunk):
                    forward(model, calib_inputs[s : s + chunk].to(device))

            hs, counts = _hessians(run_model, {name: model.get_submodule(name)})
            h, cross, count = hs.get(name), None, counts.get(name)
        if h is not None:
            walk.prune(name, h, count, cross)


RECONSTRUCTORS.register("sparsegpt", config=SparseGPTConfig, label="SparseGPT", order=5, selects_masks=True)(
    reconstruct
)
