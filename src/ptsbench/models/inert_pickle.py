"""Reading training checkpoints (mmengine, PyTorch Lightning) under torch >= 2.6's ``weights_only`` default.

An mmengine checkpoint is ``{"meta": ..., "state_dict": ..., "optimizer": ..., "message_hub": ...}``;
its metadata pickles mmengine and numpy objects (``HistoryBuffer``, ``ConfigDict``, numpy scalars),
so ``torch.load(weights_only=True)`` refuses the whole file, and mmengine's own loader fails the
same way on torch 2.14 (CompVis' Lightning ``.ckpt`` files likewise pickle callbacks and hparams). Loading it with ``weights_only=False`` would run whatever the pickle names.
Here the pickle is read by an unpickler that resolves only the globals torch's weights-only
unpickler allows (tensors, storages, containers) and turns every other global into an inert
placeholder that records its arguments and runs nothing; the tensors of ``state_dict`` come out
intact and the metadata comes out as placeholders, which PTSBench never reads.
"""

from __future__ import annotations

import pickle
import types
from pathlib import Path

import torch

from ..errors import ConfigError


class InertGlobal:
    """Stands in for a pickled global that is not a tensor type; constructing it runs nothing."""

    qualname = "?"

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state):
        self.state = state

    def __setitem__(self, key, value):  # pickled dict subclasses fill themselves item by item
        self.__dict__.setdefault("items", {})[key] = value

    def append(self, value):  # and list subclasses by append/extend
        self.__dict__.setdefault("list", []).append(value)

    def extend(self, values):
        self.__dict__.setdefault("list", []).extend(values)

    def __repr__(self) -> str:
        return f"<inert {self.qualname}>"


def _allowed_globals() -> dict[str, object]:
    from torch import _weights_only_unpickler as wou

    allowed = dict(wou._get_allowed_globals())
    for obj in torch.serialization.get_safe_globals():
        obj = obj[0] if isinstance(obj, tuple) else obj
        allowed[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return allowed


class _InertUnpickler(pickle.Unpickler):
    allowed: dict[str, object] = {}

    def find_class(self, module: str, name: str):
        hit = self.allowed.get(f"{module}.{name}")
        if hit is not None:
            return hit
        return type(name, (InertGlobal,), {"qualname": f"{module}.{name}"})


def read_state_dict_inert(path: Path) -> dict[str, torch.Tensor]:
    """The ``state_dict`` tensors of an mmengine/Lightning checkpoint (or of a bare state dict)."""
    _InertUnpickler.allowed = _allowed_globals()
    inert = types.SimpleNamespace(Unpickler=_InertUnpickler, load=pickle.load, __name__="ptsbench_inert_pickle")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False, pickle_module=inert)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as e:
        raise ConfigError(
            f"model.weights: {path} is not a readable torch checkpoint ({str(e).splitlines()[0]})"
        ) from None
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(
            f"model.weights: {path} holds no state_dict of tensors "
            f"(found {type(ckpt).__name__} with keys {list(ckpt)[:6] if isinstance(ckpt, dict) else '-'})"
        )
    if state and all(k.startswith("module.") for k in state):  # saved from a (Distributed)DataParallel wrapper
        state = {k[len("module.") :]: v for k, v in state.items()}
    return dict(state)
