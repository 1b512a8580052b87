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
from dataclasses import dataclass

import torch
from omegaconf import DictConfig, OmegaConf

from ..models.adapters import GenericAdapter
from ..schemas import Schema, check_params, knob
from ..sparsity.gemm import add_cross_gram, add_input_gram, gemm_weight
from ..sparsity.selection import nm_column_order
from . import RECONSTRUCTORS
from .feeder import UnitFeeder
from .obs import output_error, sparsegpt_prune
from .unit_data import UnitChain, unit_loss


@dataclass
class SparseGPTConfig(Schema):
    """conf/reconstruction/sparsegpt.yaml."""

    name: str = knob("sparsegpt")
    blocksize: int = knob(128, ge=1)  # columns per lazy-update block (reference: 128)
    percdamp: float = knob(0.01, ge=0, lt=1)  # damping added to H's diagonal, a fraction of its mean (reference)
    chunk_size: int = knob(256, ge=1)  # samples per forward when accumulating H
    offload: bool | str = knob("auto", choices=("auto", True, False))  # cached unit inputs on the host
    unit_loss: bool = knob(False)  # also record each block's loss to its dense output before/after (2 forwards)
    # what the pruned layer must reproduce: "sparse" = the dense weights on the sparse model's input
    # (reference), "dense" = the dense layer's output on the dense model's input (asymmetric)
    target: str = knob("sparse", choices=("sparse", "dense"))


def check_config(cfg) -> dict:
    """The knobs checked against SparseGPTConfig, unset ones at its defaults."""
    return check_params(
        "reconstruction",
        SparseGPTConfig,
        OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg),
    )


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
    hs, counts = {}, {}

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
        seen = {"s": [], "d": []}
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
def _prune_layer(name, module, dense_module, keep, h, n_cols, cfg, nm, cross=None) -> dict:
    t0 = time.perf_counter()
    w_view = gemm_weight(module)
    dense = gemm_weight(dense_module).detach().float()
    k = int((~keep).sum())
    before = output_error(dense - w_view.float(), h, n_cols)
    start = dense if cross is None else dense_target_weight(dense, h, cross, float(cfg.get("percdamp", 0.01)))
    new, new_keep, damp = sparsegpt_prune(
        start,
        h,
        k,
        blocksize=int(cfg.get("blocksize", 128)),
        percdamp=float(cfg.get("percdamp", 0.01)),
        group=str(cfg.get("group", "layer")),
        nm=nm,
        order=nm_column_order(module.weight.shape) if nm else None,  # N:M groups = a kernel position's channels
    )
    w_view.copy_(new.to(w_view.dtype))
    keep.copy_(new_keep.reshape(keep.shape))
    return {
        "layer": name,
        "pruned": k,
        "error_before": before,
        "error_after": output_error(dense - new, h, n_cols),
        "damping": damp,
        "seconds": round(time.perf_counter() - t0, 4),
    }


def reconstruct(
    model, dense_model, masks, calib_inputs, cfg, device, *, adapter=None, task=None, sparsity=None, **_
) -> dict:
    cfg = check_config(cfg)
    device = torch.device(device)
    adapter = adapter or GenericAdapter()
    forward = task.forward_for_calibration if task is not None else (lambda m, x: m(x))
    nm = None
    if sparsity is not None and sparsity.get("pattern", "unstructured") == "nm":
        nm = (int(sparsity.get("n", 2)), int(sparsity.get("m", 4)))
    sp_group = sparsity.get("group", "layer") if sparsity is not None else "layer"
    cfg_eff = {**{k: cfg.get(k) for k in ("blocksize", "percdamp") if cfg.get(k) is not None}, "group": sp_group}
    chunk = int(cfg.get("chunk_size", 256))
    with_unit_loss = bool(cfg.get("unit_loss", False))
    dense_target = cfg.get("target", "sparse") == "dense"
    # layers at rate 0 (N:M misfits, dense by allocation) keep their weights: nothing to select
    todo = {n for n, keep in masks.items() if not bool(keep.all())}
    units = [u for u in adapter.units(model, "block") if any(n in todo for n in u.layers)]
    report = {
        "name": "sparsegpt",
        "blocksize": int(cfg.get("blocksize", 128)),
        "percdamp": float(cfg.get("percdamp", 0.01)),
        "group": sp_group,
        "nm": list(nm) if nm else None,
        "target": "dense" if dense_target else "sparse",
        "adapter": adapter.family,
        "num_units": len(units),
        "units": [],
        "layers": [],
    }
    model.eval()
    t_start = time.perf_counter()
    feeder = UnitFeeder(
        model,
        dense_model,
        units,
        calib_inputs,
        forward,
        "sparse",
        device,
        cfg.get("offload", "auto"),
        chunk,
        targets=with_unit_loss or dense_target,  # otherwise only the sparse X is read
    )
    for unit in units:
        t0 = time.perf_counter()
        x, y = feeder.tensors(unit)
        chain = UnitChain(model, unit.modules)
        entry = {"unit": unit.name, "layers": []}
        if with_unit_loss:
            entry["loss_before"] = unit_loss(chain, x, y, device, chunk)
        layer_mods = {n: model.get_submodule(n) for n in unit.layers if n in todo}

        def run_all(chain=chain, x=x):
            for s in range(0, len(x), chunk):
                _until_reached(chain, x.chunk(s, s + chunk).to(device))

        order, once = _call_order(lambda chain=chain, x=x: chain(x.chunk(0, 1).to(device)), layer_mods)
        n_chunks = -(-len(x) // chunk)
        dense_chain, x_dense = UnitChain(dense_model, unit.modules), feeder.dense_x
        for name in order:
            if dense_target:
                h, cross, count = _paired_grams(
                    lambda i, chain=chain, x=x: chain(x.chunk(i * chunk, (i + 1) * chunk).to(device)),
                    lambda i, chain=dense_chain, x=x_dense: chain(x.chunk(i * chunk, (i + 1) * chunk).to(device)),
                    n_chunks,
                    layer_mods[name],
                    dense_model.get_submodule(name),
                    stop=name in once,
                )
            else:
                hs, counts = _hessians(run_all, {name: layer_mods[name]}, stop=name in once)
                h, cross, count = hs.get(name), None, counts.get(name)
            if h is None:
                continue  # the unit's forward never calls it: handled with the uncovered layers
            report["layers"].append(
                _prune_layer(
                    name,
                    layer_mods[name],
                    dense_model.get_submodule(name),
                    masks[name],
                    h,
                    count,
                    cfg_eff,
                    nm,
                    cross,
                )
            )
            entry["layers"].append(name)
            todo.discard(name)
        if with_unit_loss:
            entry["loss_after"] = unit_loss(chain, x, y, device, chunk)
        entry["seconds"] = round(time.perf_counter() - t0, 3)
        report["units"].append(entry)
        del x, y, x_dense
    report["uncovered_layers"] = sorted(todo)
    for name in [n for n in masks if n in todo]:  # model order; inputs from a whole-model forward

        def run_model():
            for s in range(0, len(calib_inputs), chunk):
                forward(model, calib_inputs[s : s + chunk].to(device))

        if dense_target:
            h, cross, count = _paired_grams(
                lambda i: forward(model, calib_inputs[i * chunk : (i + 1) * chunk].to(device)),
                lambda i: forward(dense_model, calib_inputs[i * chunk : (i + 1) * chunk].to(device)),
                -(-len(calib_inputs) // chunk),
                model.get_submodule(name),
                dense_model.get_submodule(name),
            )
        else:
            hs, counts = _hessians(run_model, {name: model.get_submodule(name)})
            h, cross, count = hs.get(name), None, counts.get(name)
        if h is not None:
            report["layers"].append(
                _prune_layer(
                    name,
                    model.get_submodule(name),
                    dense_model.get_submodule(name),
                    masks[name],
                    h,
                    count,
                    cfg_eff,
                    nm,
                    cross,
                )
            )
            todo.discard(name)
    report["unreached_layers"] = sorted(todo)  # never called by any forward: magnitude mask kept
    report["seconds"] = round(time.perf_counter() - t_start, 3)
    return report


reconstruct.check_config = check_config
reconstruct.config = SparseGPTConfig
RECONSTRUCTORS.register("sparsegpt")(reconstruct)
