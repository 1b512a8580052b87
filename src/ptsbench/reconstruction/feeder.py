"""Serves each unit's calibration tensors (X, Y) in execution order, reusing work across units.

Semantics are those of ``unit_data.unit_tensors`` (X from the dense or the current sparse model,
Y = dense unit on dense X); this class only makes them cheaper to get:
- the dense inputs of all units are captured in ONE forward of the dense model when they fit in
  a quarter of the free memory, instead of one (prefix) forward per unit;
- with ``input=sparse``, when the previous unit's dense output *is* this unit's dense input
  (verified on the data: consecutive blocks of a stage, conv->conv inside a block), this unit's
  sparse input is the reconstructed previous unit applied to its own sparse input, so the sparse
  model's prefix is not run again;
- otherwise, given the adapter's block units as a spine (``spine.py``), the sparse input of the block
  holding the unit is walked forward one verified block at a time and the unit's input is captured
  by running that block alone: part of one block instead of the whole sparse prefix, same tensors;
- failing both, the sparse prefix runs, stopped at the unit.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from .spine import BlockSpine
from .unit_data import PROBE, CalibTensor, UnitChain, _alloc, _put, apply_chunked, capture_input, same_activation


def _free_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 2 * 2**30


@torch.no_grad()
def _probe_sizes(model: nn.Module, units, sample: torch.Tensor, forward, device) -> list[int]:
    """Bytes per sample of each unit's input and (largest) output, from one-sample forward."""
    sizes = [0] * len(units)
    handles = []
    for k, u in enumerate(units):

        def grab(_m, args, out=None, k=k):
            t = args[0] if out is None else out
            if torch.is_tensor(t):
                sizes[k] = max(sizes[k], t.numel() * t.element_size())

        handles.append(model.get_submodule(u.modules[0]).register_forward_pre_hook(grab))
        handles.append(model.get_submodule(u.modules[-1]).register_forward_hook(grab))
    try:
        forward(model, sample.to(device))
    finally:
        for h in handles:
            h.remove()
    return sizes


class UnitFeeder:
    def __init__(
        self,
        model,
        dense_model,
        units,
        calib_inputs,
        forward,
        input_mode: str,
        device: torch.device,
        offload,
        chunk_size: int = 256,
        channels_last: bool = False,
        targets: bool = True,
        spine=(),
    ):
        self.model, self.dense_model, self.units = model, dense_model, units
        self.calib, self.forward, self.input_mode, self.device = calib_inputs, forward, input_mode, device
        # a caller that reads neither Y nor the dense X (targets=False, input=sparse) gets Y from the
        # first PROBE samples only: enough to verify the next unit's shortcut, since whether one
        # unit feeds the next is a property of the graph, not of the data
        self.dense_calib = calib_inputs if targets or input_mode == "dense" else calib_inputs[:PROBE]
        self.kw: dict[str, Any] = dict(chunk_size=chunk_size, channels_last=channels_last)
        n = len(calib_inputs)
        sizes = _probe_sizes(dense_model, units, calib_inputs[:1], forward, device)
        free = _free_bytes(device)
        if device.type != "cuda":
            offload = False
        elif offload == "auto":
            offload = 3 * max(sizes, default=0) * n > 0.5 * free  # X, Y and a transient dense X
        self.store = torch.device("cpu") if offload else device
        store_free = _free_bytes(self.store) if offload else free
        self.dense_inputs: dict[str, CalibTensor] = {}
        if sum(sizes) * n <= 0.25 * store_free:
            self.dense_inputs = self._capture_all(dense_model, [u.modules[0] for u in units], self.dense_calib)
        self.prev: tuple[Any, CalibTensor, CalibTensor] | None = (
            None  # (unit, sparse X, dense Y) of the last unit served, for the shortcut
        )
        self.dense_x: CalibTensor | None = None  # dense X of the last unit served
        self.shortcuts = 0
        self.spine = (
            BlockSpine(model, dense_model, list(spine), calib_inputs, forward, device, self.store, self.kw)
            if spine and input_mode == "sparse"
            else None
        )

    @torch.no_grad()
    def _capture_all(self, model, names: list[str], calib: torch.Tensor) -> dict[str, CalibTensor]:
        """Dense inputs of every unit from one forward per chunk (first call of each module)."""
        out: dict[str, CalibTensor] = {}
        seen: dict[str, torch.Tensor] = {}
        handles = [
            model.get_submodule(name).register_forward_pre_hook(
                lambda _m, args, name=name: seen.setdefault(name, args[0])
            )
            for name in names
        ]
        try:
            chunk = self.kw["chunk_size"]
            for start in range(0, len(calib), chunk):
                seen.clear()
                self.forward(model, calib[start : start + chunk].to(self.device, non_blocking=True))
                for name, x in seen.items():
                    if name not in out:
                        out[name] = _alloc(len(calib), x, self.store, self.kw["channels_last"])
                    _put(out[name], start, x)
        finally:
            for h in handles:
                h.remove()
        return out

    def tensors(self, unit, while_target=None) -> tuple[CalibTensor, CalibTensor]:
        """(X, Y) for ``unit``; ``while_target`` (a context manager) is active while the dense
        unit computes Y, so hooks on its layers see the dense inputs. Under targets=False, Y (and
        ``dense_x``) cover the first PROBE samples only."""
        first = unit.modules[0]
        x_dense = self.dense_inputs.pop(first, None)
        if x_dense is None:
            x_dense = capture_input(
                self.dense_model, first, self.dense_calib, self.forward, self.device, self.store, **self.kw
            )
        dense_chain = UnitChain(self.dense_model, unit.modules)
        if while_target is None:
            y = apply_chunked(dense_chain, x_dense, self.store, self.device, **self.kw)
        else:
            with while_target:
                y = apply_chunked(dense_chain, x_dense, self.store, self.device, **self.kw)
        x: CalibTensor | None
        if self.input_mode == "dense":
            x = x_dense
        else:
            x = self._from_previous(x_dense)
            if x is None and self.spine is not None:
                x = self.spine.input_of(first)
            if x is None:
                x = capture_input(self.model, first, self.calib, self.forward, self.device, self.store, **self.kw)
            if self.spine is not None:
                self.spine.keep(first, x)
        self.prev = (unit, x, y)
        self.dense_x = x_dense  # the asymmetric SparseGPT target reads it
        return x, y

    def _from_previous(self, x_dense: CalibTensor) -> CalibTensor | None:
        if self.prev is None:
            return None
        unit, x_prev, y_prev = self.prev
        self.prev = None
        x_seen = x_dense.data[: len(y_prev)]
        if y_prev.nhwc != x_dense.nhwc or not same_activation(y_prev.data, x_seen):
            return None
        self.shortcuts += 1
        return apply_chunked(UnitChain(self.model, unit.modules), x_prev, self.store, self.device, **self.kw)

    @property
    def spine_captures(self) -> int:
        """Units whose sparse input came from running one block on its kept sparse input."""
        return self.spine.captures if self.spine is not None else 0
