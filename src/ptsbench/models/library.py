"""Library architectures (paper Table 1, docs/methods.md#model-repository): ``model.source: torchvision | timm``.

The builder makes the architecture with random weights, so every Table 1 model builds offline:
- ``torchvision``: ``torchvision.models.get_model(model.arch, **model.kwargs)`` (e.g. ``arch:
  mobilenet_v2`` with ``kwargs: {width_mult: 0.5}``); a dataset with other than 3 channels gets
  a new stem conv (the first Conv2d).
- ``timm``: ``timm.create_model(model.arch, **model.kwargs)`` with ``in_chans``; models with a
  fixed input size (ViT/DeiT: position embeddings) are built at the dataset's image size.
Weights are a separate knob (``model.weights``, see :mod:`ptsbench.models.checkpoints`).

The published weights named by ``model.pretrained`` also fix the evaluation preprocessing
(:func:`eval_preprocess`): torchvision's ``Weights.transforms()`` (resize 256 / crop 224 for
most) and timm's ``resolve_data_config`` (crop_pct, interpolation, mean/std of the weights).
"""

from __future__ import annotations

import math
from typing import Any

from torch import nn

from ..data.images import EvalPreprocess  # the data layer owns the transform; this module picks it
from ..errors import ConfigError
from .checkpoints import timm_pretrained_cfg
from .sources import MODEL_SOURCES, LibraryModelConfig


def _kwargs(cfg: LibraryModelConfig) -> dict:
    return dict(cfg.kwargs or {})


def _replace_stem(model: nn.Module, in_chans: int) -> None:
    name, conv = next((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d))
    if conv.in_channels == in_chans:
        return
    # the conv's geometry as stored (tuples of any length to torch's types; 2-tuples here)
    geometry: dict[str, Any] = dict(
        kernel_size=conv.kernel_size, stride=conv.stride, padding=conv.padding, dilation=conv.dilation
    )
    new = nn.Conv2d(in_chans, conv.out_channels, bias=conv.bias is not None, **geometry)
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def check_library_config(cfg: LibraryModelConfig) -> None:
    """Cheap check run before data is loaded: the architecture exists."""
    if cfg.source == "timm":
        import timm

        if not timm.is_model(str(cfg.arch)):
            raise ConfigError(f"model.arch='{cfg.arch}' is not a timm model; see timm.list_models()")
    elif cfg.source == "torchvision":
        import torchvision

        if str(cfg.arch) not in torchvision.models.list_models():
            raise ConfigError(
                f"model.arch='{cfg.arch}' is not a torchvision model; see torchvision.models.list_models()"
            )


@MODEL_SOURCES.register("torchvision", config=LibraryModelConfig, check=check_library_config)
def build_torchvision(cfg: LibraryModelConfig, num_classes: int, in_chans: int, img_size: int) -> nn.Module:
    import torchvision

    try:
        model = torchvision.models.get_model(str(cfg.arch), weights=None, num_classes=num_classes, **_kwargs(cfg))
    except ValueError as e:
        raise ConfigError(
            f"model.arch='{cfg.arch}' is not a torchvision classification model ({e}); "
            f"see torchvision.models.list_models()"
        ) from None
    _replace_stem(model, in_chans)
    return model


@MODEL_SOURCES.register("timm", config=LibraryModelConfig, check=check_library_config)
def build_timm(cfg: LibraryModelConfig, num_classes: int, in_chans: int, img_size: int) -> nn.Module:
    import timm

    arch = str(cfg.arch)
    if not timm.is_model(arch):
        raise ConfigError(f"model.arch='{arch}' is not a timm model; see timm.list_models('{arch[:6]}*')")
    kw = _kwargs(cfg)
    pcfg = timm_pretrained_cfg(arch)
    if pcfg is not None and pcfg.fixed_input_size:  # position embeddings depend on the image size
        kw.setdefault("img_size", img_size)
    return timm.create_model(arch, pretrained=False, num_classes=num_classes, in_chans=in_chans, **kw)


def eval_preprocess(cfg) -> EvalPreprocess:
    """The eval transform the weights named by ``model.pretrained`` were measured with; the
    torchvision default (resize 256, crop 224, bilinear, ImageNet mean/std) otherwise."""
    source, tag = str(cfg.source), getattr(cfg, "pretrained", None)
    if source == "timm":
        from timm.data import resolve_data_config

        pcfg = timm_pretrained_cfg(str(tag or cfg.arch))
        if pcfg is None:
            return EvalPreprocess()
        dc = resolve_data_config({}, pretrained_cfg=pcfg.to_dict())
        size = int(dc["input_size"][-1])
        return EvalPreprocess(
            size, int(math.floor(size / dc["crop_pct"])), str(dc["interpolation"]), tuple(dc["mean"]), tuple(dc["std"])
        )
    if source == "torchvision" and tag:
        from torchvision.models import get_weight

        t = get_weight(str(tag)).transforms()
        return EvalPreprocess(
            int(t.crop_size[0]), int(t.resize_size[0]), t.interpolation.value, tuple(t.mean), tuple(t.std)
        )
    return EvalPreprocess()
