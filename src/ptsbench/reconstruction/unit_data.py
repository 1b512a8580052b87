"""Calibration tensors of one reconstruction unit: its input X and its dense target Y (docs/methods.md#reconstruction).

- X: what the unit's first module receives on the calibration images, captured once with a
  forward pre-hook that stops the forward right there (so only the prefix is computed).
  ``input=dense`` takes X from the dense model; ``input=sparse`` from the current sparse model,
  i.e. after the already-reconstructed preceding units.
- Y: the dense unit applied to the dense X, whatever the input mode.
Both are kept on the device (or on the host, pinned, when ``offload``), 4-D maps optionally in
NHWC layout so a gathered batch is already channels_last.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


class _Reached(Exception):
    """Raised by the capture hook to stop the forward once the unit's input is known."""


class UnitChain(nn.Module):
    """The unit's modules applied in order (shared with the model, not copied)."""

    def __init__(self, model: nn.Module, names: tuple[str, ...]):
        super().__init__()
        self.mods = nn.ModuleList([model.get_submodule(n) for n in names])

    def forward(self, x):
        for m in self.mods:
            x = m(x)
        return x


@dataclass
class CalibTensor:
    """N samples stored on ``data.device``; ``nhwc`` means 4-D maps are stored as (N, H, W, C)."""

    data: torch.Tensor
    nhwc: bool

    def __len__(self) -> int:
        return self.data.shape[0]

    def gather(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.data.index_select(0, idx)
        return x.permute(0, 3, 1, 2) if self.nhwc else x

    def chunk(self, start: int, stop: int) -> torch.Tensor:
        x = self.data[start:stop]
        return x.permute(0, 3, 1, 2) if self.nhwc else x

    @property
    def sample_shape(self) -> tuple[int, ...]:
        s = tuple(self.data.shape[1:])
        return (s[2], s[0], s[1]) if self.nhwc else s


def _alloc(n: int, sample: torch.Tensor, store: torch.device, channels_last: bool) -> CalibTensor:
    nhwc = channels_last and sample.dim() == 4
    shape = (n, *sample.shape[2:], sample.shape[1]) if nhwc else (n, *sample.shape[1:])
    pin = store.type == "cpu" and torch.cuda.is_available() and sample.device.type == "cuda"
    return CalibTensor(torch.empty(shape, dtype=sample.dtype, device=store, pin_memory=pin), nhwc)


def _put(dst: CalibTensor, start: int, x: torch.Tensor) -> None:
    # a blocking copy: an offloaded (host) store is read on the host right after capture
    dst.data[start : start + len(x)].copy_(x.permute(0, 2, 3, 1) if dst.nhwc else x)


@torch.no_grad()
def capture_inputs_of(
    module: nn.Module, run_chunk, num: int, store: torch.device, chunk_size: int = 256, channels_last: bool = False
) -> CalibTensor | None:
    """What ``module`` first receives while ``run_chunk(start, stop)`` runs on each chunk of ``num``
    samples, the run stopped right there; None when a chunk never reaches it."""
    seen: list[torch.Tensor] = []

    def stop_here(_mod, args):
        seen.append(args[0])
        raise _Reached

    handle = module.register_forward_pre_hook(stop_here)
    out = None
    try:
        for start in range(0, num, chunk_size):
            seen.clear()
            try:
                run_chunk(start, start + chunk_size)
            except _Reached:
                pass
            if not seen:
                return None
            if out is None:
                out = _alloc(num, seen[0], store, channels_last)
            _put(out, start, seen[0])
    finally:
        handle.remove()
    return out


def capture_input(
    model: nn.Module,
    module_name: str,
    calib_inputs: torch.Tensor,
    forward,
    device: torch.device,
    store: torch.device,
    chunk_size: int = 256,
    channels_last: bool = False,
) -> CalibTensor:
    """Inputs that ``module_name`` receives when ``forward(model, x)`` runs on the calibration set."""
    out = capture_inputs_of(
        model.get_submodule(module_name),
        lambda start, stop: forward(model, calib_inputs[start:stop].to(device, non_blocking=True)),
        len(calib_inputs), store, chunk_size, channels_last,
    )  # fmt: skip
    if out is None:
        raise RuntimeError(
            f"reconstruction unit input '{module_name}' is never reached by the "
            f"model's forward; the adapter lists a module the model does not run"
        )
    return out


PROBE = 16  # samples on which a property of the graph (which activation feeds which module) is verified


def same_activation(a, b) -> bool:
    """``a`` and ``b`` are one activation seen at two places (same shape, equal up to float rounding)."""
    return (
        torch.is_tensor(a) and torch.is_tensor(b) and a.shape == b.shape and torch.allclose(a, b, rtol=1e-5, atol=1e-6)
    )


@torch.no_grad()
def apply_chunked(
    chain: nn.Module,
    x: CalibTensor,
    store: torch.device,
    device: torch.device,
    chunk_size: int = 256,
    channels_last: bool = False,
) -> CalibTensor:
    """``chain`` applied to every stored sample (fp32, no autocast: targets are exact)."""
    out = None
    for start in range(0, len(x), chunk_size):
        y = chain(x.chunk(start, start + chunk_size).to(device, non_blocking=True))
        if out is None:
            out = _alloc(len(x), y, store, channels_last)
        _put(out, start, y)
    assert out is not None  # the calibration set is never empty
    return out


def unit_tensors(
    unit_modules: tuple[str, ...],
    model: nn.Module,
    dense_model: nn.Module,
    calib_inputs: torch.Tensor,
    forward,
    input_mode: str,
    device: torch.device,
    store: torch.device,
    chunk_size: int = 256,
    channels_last: bool = False,
) -> tuple[CalibTensor, CalibTensor]:
    """(X, Y) for a unit: X from the dense or the sparse model, Y = dense unit on dense X."""
    kw: dict[str, Any] = dict(chunk_size=chunk_size, channels_last=channels_last)
    x_dense = capture_input(dense_model, unit_modules[0], calib_inputs, forward, device, store, **kw)
    y = apply_chunked(UnitChain(dense_model, unit_modules), x_dense, store, device, **kw)
    if input_mode == "dense":
        return x_dense, y
    del x_dense
    return capture_input(model, unit_modules[0], calib_inputs, forward, device, store, **kw), y


def channel_positions(sample_shape: tuple[int, ...]) -> int:
    """Positions per sample: conv maps keep channels in dim 1, tokens/features in the last dim."""
    n = 1
    for d in sample_shape:
        n *= d
    channels = sample_shape[0] if len(sample_shape) == 3 else sample_shape[-1]
    return n // channels


@torch.no_grad()
def unit_loss(chain: nn.Module, x: CalibTensor, y: CalibTensor, device: torch.device, chunk_size: int = 256) -> float:
    """Squared error summed over channels, averaged over samples and positions (fp32)."""
    total = torch.zeros((), dtype=torch.float64, device=device)
    for start in range(0, len(x), chunk_size):
        out = chain(x.chunk(start, start + chunk_size).to(device, non_blocking=True)).float()
        total += (out - y.chunk(start, start + chunk_size).to(device, non_blocking=True)).pow(2).sum().double()
    return float(total) / (len(y) * channel_positions(y.sample_shape))
