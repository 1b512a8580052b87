"""Published checkpoint layouts: qfgaohao/pytorch-ssd ``mb1-ssd`` / ``mb2-ssd-lite`` state
dicts load into the project's SSD ports with the repository's priors. The synthetic checkpoints
below are written from that repository's architecture (parameter names and shapes of its
``MobileNetV1``/``MobileNetV2`` base nets, extras and headers), not from the project's modules, so a
wrong key map or a wrong shape fails the strict load."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

from ptsbench.models import build_model
from ptsbench.models.detection_pytorch_ssd import pytorch_ssd_priors

VOC_CLASSES = 21  # 20 VOC classes + background, as the published models
MB1 = (
    [(32, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 512)]
    + [(512, 512)] * 5
    + [(512, 1024), (1024, 1024)]
)
MB2_SETTING = [(1, 16, 1), (6, 24, 2), (6, 32, 3), (6, 64, 4), (6, 96, 3), (6, 160, 3), (6, 320, 1)]


def _bn(state, prefix, c):
    state.update(
        {
            f"{prefix}.weight": torch.rand(c) + 0.5,
            f"{prefix}.bias": torch.randn(c),
            f"{prefix}.running_mean": torch.randn(c),
            f"{prefix}.running_var": torch.rand(c) + 0.5,
            f"{prefix}.num_batches_tracked": torch.tensor(7),
        }
    )


def _conv(state, prefix, cout, cin, k, bias=False):
    state[f"{prefix}.weight"] = torch.randn(cout, cin, k, k)
    if bias:
        state[f"{prefix}.bias"] = torch.randn(cout)


def mb1_ssd_layout(num_classes=VOC_CLASSES) -> dict[str, torch.Tensor]:
    s: dict[str, torch.Tensor] = {}
    _conv(s, "base_net.0.0", 32, 3, 3)
    _bn(s, "base_net.0.1", 32)
    for i, (cin, cout) in enumerate(MB1, start=1):  # conv_dw: dw 3x3, BN, ReLU, pw 1x1, BN, ReLU
        _conv(s, f"base_net.{i}.0", cin, 1, 3)
        _bn(s, f"base_net.{i}.1", cin)
        _conv(s, f"base_net.{i}.3", cout, cin, 1)
        _bn(s, f"base_net.{i}.4", cout)
    for i, (cin, mid, cout) in enumerate(((1024, 256, 512), (512, 128, 256), (256, 128, 256), (256, 128, 256))):
        _conv(s, f"extras.{i}.0", mid, cin, 1, bias=True)
        _conv(s, f"extras.{i}.2", cout, mid, 3, bias=True)
    for i, c in enumerate((512, 1024, 512, 256, 256, 256)):
        _conv(s, f"classification_headers.{i}", 6 * num_classes, c, 3, bias=True)
        _conv(s, f"regression_headers.{i}", 6 * 4, c, 3, bias=True)
    return s


def _inverted_residual(s, prefix, cin, cout, t):
    hidden = round(cin * t)
    if t == 1:
        _conv(s, f"{prefix}.conv.0", hidden, 1, 3)
        _bn(s, f"{prefix}.conv.1", hidden)
        _conv(s, f"{prefix}.conv.3", cout, hidden, 1)
        _bn(s, f"{prefix}.conv.4", cout)
        return
    _conv(s, f"{prefix}.conv.0", hidden, cin, 1)
    _bn(s, f"{prefix}.conv.1", hidden)
    _conv(s, f"{prefix}.conv.3", hidden, 1, 3)
    _bn(s, f"{prefix}.conv.4", hidden)
    _conv(s, f"{prefix}.conv.6", cout, hidden, 1)
    _bn(s, f"{prefix}.conv.7", cout)


def mb2_ssd_lite_layout(num_classes=VOC_CLASSES) -> dict[str, torch.Tensor]:
    s: dict[str, torch.Tensor] = {}
    _conv(s, "base_net.0.0", 32, 3, 3)
    _bn(s, "base_net.0.1", 32)
    cin, i = 32, 1
    for t, c, n in MB2_SETTING:
        for _ in range(n):
            _inverted_residual(s, f"base_net.{i}", cin, c, t)
            cin, i = c, i + 1
    _conv(s, f"base_net.{i}.0", 1280, cin, 1)
    _bn(s, f"base_net.{i}.1", 1280)
    for j, (a, b, t) in enumerate(((1280, 512, 0.2), (512, 256, 0.25), (256, 256, 0.5), (256, 64, 0.25))):
        _inverted_residual(s, f"extras.{j}", a, b, t)
    for j, c in enumerate((576, 1280, 512, 256, 256)):  # SeperableConv2d: dw conv (bias), BN, ReLU6, 1x1 conv
        for head, out in (("classification_headers", 6 * num_classes), ("regression_headers", 24)):
            _conv(s, f"{head}.{j}.0", c, 1, 3, bias=True)
            _bn(s, f"{head}.{j}.1", c)
            _conv(s, f"{head}.{j}.3", out, c, 1, bias=True)
    _conv(s, "classification_headers.5", 6 * num_classes, 64, 1, bias=True)
    _conv(s, "regression_headers.5", 24, 64, 1, bias=True)
    return s


def _build(arch, path):
    cfg = OmegaConf.create({"name": arch, "arch": arch, "source": "torchvision_det", "weights": str(path)})
    return build_model(cfg, VOC_CLASSES - 1, 3, 300, "voc07")


@pytest.mark.parametrize("arch,layout", [("mb1_ssd", mb1_ssd_layout), ("mb2_ssd_lite", mb2_ssd_lite_layout)])
def test_pytorch_ssd_checkpoint_loads_strictly(arch, layout, tmp_path):
    torch.manual_seed(0)
    state = layout()
    path = tmp_path / f"{arch}-Epoch-199-Loss-3.0.pth"
    torch.save(state, path)  # the repository saves a bare state dict
    model = _build(arch, path)  # strict load: a missing or unexpected key raises ConfigError
    own = model.state_dict()
    assert sum(v.numel() for k, v in own.items() if "num_batches" not in k) == sum(
        v.numel() for k, v in state.items() if "num_batches" not in k
    ) - sum(
        v.numel() for k, v in state.items() if k.endswith(".0.bias") and "_headers." in k and arch == "mb2_ssd_lite"
    )
    # the stem and the first classification header land where the forward pass uses them
    assert torch.equal(own["backbone.stages.0.0.0.weight"], state["base_net.0.0.weight"])
    with torch.no_grad():
        out = model([torch.rand(3, 240, 320)])
    assert out[0]["boxes"].shape[1] == 4
    if arch == "mb2_ssd_lite":
        # the depthwise head conv's bias moved into its BN: running_mean - bias
        want = state["classification_headers.0.1.running_mean"] - state["classification_headers.0.0.bias"]
        assert torch.allclose(own["head.classification_head.module_list.0.0.1.running_mean"], want)
        assert torch.equal(own["backbone.stages.1.0.1.weight"], state["base_net.14.conv.6.weight"])
    else:
        assert torch.equal(own["backbone.stages.5.1.0.weight"], state["extras.3.2.weight"])


def test_pytorch_ssd_priors_follow_the_repository_config():
    p = pytorch_ssd_priors()
    assert p.shape == (6 * (19 * 19 + 10 * 10 + 5 * 5 + 3 * 3 + 2 * 2 + 1), 4)
    # first place of the 19x19 map: centre (0 + 0.5) / (300 / 16), min box 60 px, then sqrt(60 * 105) px
    assert torch.allclose(p[0], torch.tensor([0.5 / 18.75, 0.5 / 18.75, 0.2, 0.2]))
    assert torch.allclose(p[1, 2:], torch.tensor([math.sqrt(60 * 105) / 300] * 2))
    assert torch.allclose(p[2, 2:], torch.tensor([0.2 * math.sqrt(2), 0.2 / math.sqrt(2)]))
    # the second place is one step along x; the 1x1 map's boxes are clamped to the image
    assert torch.allclose(p[6, :2], torch.tensor([1.5 / 18.75, 0.5 / 18.75]))
    assert float(p[-6:, 2:].max()) == 1.0


def test_pytorch_ssd_head_emits_one_prediction_per_prior():
    from ptsbench.tasks import EvalConfig, TaskConfig
    from ptsbench.tasks.detection import DetectionTask

    cfg = OmegaConf.create({"arch": "mb2_ssd_lite", "source": "torchvision_det", "weights": "none"})
    model = build_model(cfg, VOC_CLASSES - 1, 3, 300, "voc07")
    with torch.no_grad():
        raw = DetectionTask(TaskConfig(name="det", metric="map"), EvalConfig(batch_size=1)).forward_for_calibration(
            model, torch.rand(1, 3, 300, 300)
        )
    assert raw.shape == (1, len(pytorch_ssd_priors()), VOC_CLASSES + 4)
