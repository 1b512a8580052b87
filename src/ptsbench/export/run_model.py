"""A run's pruned model on disk: written beside its record (``save.model=true``) and rebuilt from it.

The checkpoint (``<record>.safetensors``, sparse_checkpoint.py) holds the whole state dict of the
model as the run evaluated it (BatchNorm folded when ``prune.fold_bn``), its prunable weights in
the bitmask layout, and in its metadata what rebuilding needs: the run's resolved config, the
input geometry the data gave (classes, channels, image size, dataset name, so the dataset is not
read again), the folded pairs' count and the prunable layer names. Rebuilding = the architecture
from ``ptsbench.models.build_model`` with ``model.weights=none`` (no pretrained file needed),
BatchNorm folded the same way, then the saved state dict loaded strictly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..schemas import Schema, knob
from .sparse_checkpoint import load_sparse, save_sparse, size_bytes

if TYPE_CHECKING:
    from ..sparsity.layers import PrunableLayer


@dataclass(frozen=True)
class SaveConfig(Schema):
    """``save.*``: what a run writes besides its record."""

    # the pruned model as a sparse checkpoint beside the record (<record>.safetensors; ptsbench-export reads it)
    model: bool = knob(False, omit_at_default=True)


def checkpoint_path(record_path: str | Path) -> Path:
    return Path(record_path).with_suffix(".safetensors")


def weight_keys(modules: dict[str, PrunableLayer]) -> list[str]:
    """State-dict keys of the prunable layers' weights."""
    return [f"{name}.weight" for name in modules]


def model_sizes(model: nn.Module, modules: dict[str, PrunableLayer]) -> dict[str, int]:
    """``size_bytes`` of a record: the model as a plain state dict vs as a sparse checkpoint."""
    return size_bytes(model.state_dict(), weight_keys(modules))


def save_run_model(record_path, model: nn.Module, record: dict, data, modules: dict[str, PrunableLayer]) -> Path:
    """Write the run's model beside its record; ``data``: the run's DataBundle (input geometry)."""
    meta = {
        "config": record["config"],
        "name": record["name"],
        "digest": record["digest"],
        "folded_bn": record.get("folded_bn", 0),
        "build": {
            "num_classes": data.num_classes,
            "in_chans": data.in_chans,
            "img_size": data.img_size,
            "dataset": data.name,
        },
        "prunable": list(modules),
    }
    return save_sparse(checkpoint_path(record_path), model.state_dict(), weight_keys(modules), meta)


def rebuild_model(checkpoint: str | Path) -> tuple[nn.Module, dict]:
    """The pruned model of a sparse checkpoint (eval mode, CPU) and the checkpoint's metadata."""
    from ..models import MODEL_SOURCES

    state, meta = load_sparse(checkpoint)
    model_cfg = dict(meta["config"]["model"])
    if not MODEL_SOURCES.trait(str(model_cfg.get("source", "zoo")), "loads_weights", False):
        model_cfg["weights"] = "none"  # every tensor comes from the checkpoint
    model = _architecture(model_cfg, meta["build"], meta.get("folded_bn", 0))
    model.load_state_dict(state, strict=True)
    return model.eval(), meta


def rebuild_dense_model(record: dict, build: dict) -> nn.Module:
    """The run's dense model as its dense score was measured (eval mode, CPU, BatchNorm unfolded), the
    reference of its sparse ``agreement`` and ``kl``: the record's model config with its own weights.
    ``build``: the input geometry (num_classes, in_chans, img_size, dataset) as in the checkpoint."""
    return _architecture(record["config"]["model"], build, 0).eval()


def _architecture(model_cfg, build: dict, folded_bn: int) -> nn.Module:
    """``build_model`` at the run's input geometry, BatchNorm folded when the run folded any."""
    from ..models import build_model
    from ..sparsity.layers import fold_batchnorm

    model = build_model(model_cfg, build["num_classes"], build["in_chans"], build["img_size"], build["dataset"])
    if folded_bn:
        fold_batchnorm(model)
    return model


def read_record(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())


def dense_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Plain tensors only (``torch.load(..., weights_only=True)`` reads it back)."""
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
