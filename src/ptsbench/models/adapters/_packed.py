"""Single-tensor entry points for diffusion blocks that take a side input.

Reconstruction units (docs/methods.md#reconstruction) are chains called as ``out = m(x)`` on one captured tensor.
A diffusion ResNet block also needs the time embedding (``ResnetBlock2D(h, temb)``) and a
transformer block the text states (``BasicTransformerBlock(h, encoder_hidden_states=c)``), and
both differ per calibration sample, so the side input must travel *with* the sample.

``pack_side_inputs(unet)`` gives such blocks a forward pre-hook that packs ``(h, side)`` into one
2-D tensor ``[h.flatten(1) | side.flatten(1) | header]`` (the header stores both shapes), and a
subclass whose ``forward(packed)`` unpacks and runs the original forward. The UNet's own calls
are packed on the fly, so a capture hook registered later sees the packed tensor, and
``block(packed)`` alone reproduces the block's output: the block becomes an ordinary unit.
Module names and parameters are unchanged; the hook lives on the module, so deep copies keep it.
"""

from __future__ import annotations

import torch
from torch import nn

# h_ndim, h_d1, h_d2, h_d3, side_ndim, side_d1, side_d2 (dims after the batch), each as two base-256
# digits so the header is exact even in bfloat16 (integers are exact there only up to 256)
FIELDS = 7
HEADER = 2 * FIELDS
SIDE_INPUTS = {"ResnetBlock2D": ("temb", 1), "BasicTransformerBlock": ("encoder_hidden_states", None)}
_SUBCLASSES: dict[type, type] = {}


def _dims(t: torch.Tensor | None, n: int) -> list[int]:
    shape = [] if t is None else list(t.shape[1:])
    if t is not None and len(shape) > n:
        raise ValueError(f"cannot pack a tensor of shape {tuple(t.shape)} (at most {n} dims after the batch)")
    return [len(shape)] + [int(d) for d in shape] + [0] * (n - len(shape))


def pack(h: torch.Tensor, side: torch.Tensor | None) -> torch.Tensor:
    b = h.shape[0]
    fields = [int(v) for v in _dims(h, 3) + _dims(side, 2)]
    digits = [float(d) for v in fields for d in divmod(v, 256)]
    header = torch.tensor(digits, dtype=h.dtype, device=h.device).expand(b, HEADER)
    parts = [h.reshape(b, -1)] + ([] if side is None else [side.to(h.dtype).reshape(b, -1)]) + [header]
    return torch.cat(parts, 1)


def unpack(packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    digits = [int(v) for v in packed[0, -HEADER:].tolist()]
    head = [256 * hi + lo for hi, lo in zip(digits[0::2], digits[1::2])]
    h_shape, side_shape = head[1 : 1 + head[0]], head[5 : 5 + head[4]]
    n_h = int(torch.tensor(h_shape).prod()) if h_shape else 1
    b = packed.shape[0]
    h = packed[:, :n_h].reshape(b, *h_shape)
    if not head[4]:
        return h, None
    n_side = int(torch.tensor(side_shape).prod())
    return h, packed[:, n_h : n_h + n_side].reshape(b, *side_shape)


def is_packed_call(args, kwargs) -> bool:
    return len(args) == 1 and not kwargs and torch.is_tensor(args[0]) and args[0].dim() == 2


def _pack_pre_hook(module, args, kwargs):
    if is_packed_call(args, kwargs):
        return None  # a unit call: already packed
    name, pos = module._side_input
    kwargs = dict(kwargs)
    h = args[0] if args else kwargs.pop("hidden_states", kwargs.pop("input_tensor", None))
    side = args[pos] if pos is not None and len(args) > pos else kwargs.pop(name, None)
    rest = [a for i, a in enumerate(args) if i not in (0, pos)]
    leftover = [k for k, v in kwargs.items() if k != name and v not in (None, {}, False)]
    if rest or leftover:
        raise RuntimeError(
            f"{type(module).__name__} called with inputs the packed entry cannot carry: "
            f"{leftover or f'{len(rest)} extra positional'}"
        )
    return (pack(h, side),), {}


class _PackedEntry(nn.Module):
    _side_input: tuple[str, int | None]  # set on each class of SIDE_INPUTS

    def forward(self, packed: torch.Tensor):  # noqa: D401 - see module docstring
        h, side = unpack(packed)
        return super().forward(h, **{self._side_input[0]: side})


def _packed_class(cls: type) -> type:
    if cls not in _SUBCLASSES:
        _SUBCLASSES[cls] = type(cls.__name__, (_PackedEntry, cls), {"__module__": cls.__module__})
    return _SUBCLASSES[cls]


def pack_side_inputs(model: nn.Module) -> list[str]:
    """Give every block with a side input a packed single-tensor entry; returns their names."""
    done = []
    for name, mod in model.named_modules():
        base = type(mod).__name__
        if base in SIDE_INPUTS and not isinstance(mod, _PackedEntry):
            mod._side_input = SIDE_INPUTS[base]
            mod.__class__ = _packed_class(type(mod))
            mod.register_forward_pre_hook(_pack_pre_hook, with_kwargs=True, prepend=True)
            done.append(name)
    return done
