"""Reconstruction (track 2, docs/methods.md#reconstruction): units per granularity, input semantics, fixed masks,
error correction (Eq. 1) against a hand-computed example, loss decrease on the embedded data."""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from omegaconf import OmegaConf
from torch import nn

from ptsbench.data import build_data
from ptsbench.errors import ConfigError
from ptsbench.models import build_model, zoo
from ptsbench.models.adapters import ModelAdapter, Unit, get_adapter
from ptsbench.reconstruction import RECONSTRUCTORS, unitwise
from ptsbench.reconstruction import feeder as feeder_module
from ptsbench.reconstruction import spine as spine_module
from ptsbench.reconstruction.error_correction import apply_error_correction
from ptsbench.reconstruction.feeder import UnitFeeder
from ptsbench.reconstruction.unit_data import capture_input, unit_tensors
from ptsbench.reconstruction.unitwise import UnitwiseConfig
from ptsbench.run import run
from ptsbench.schemas import build
from ptsbench.sparsity.layers import fold_batchnorm, prunable_modules
from ptsbench.sparsity.selection import apply_masks, magnitude_masks


def recon_cfg(name: str = "layer", **kw):
    base = dict(
        name=name,
        input="sparse",
        error_correction=False,
        iters=10,
        batch_size=16,
        optimizer="sgd",
        lr=None,
        lr_bias=None,
        momentum=None,
        offload="auto",
        amp="auto",
        cuda_graphs="auto",
        channels_last="auto",
        chunk_size=256,
        seed=0,
        progress=False,
    )
    return build("reconstruction", UnitwiseConfig, {**base, **kw})


def folded(model: nn.Module) -> nn.Module:
    model.eval()
    fold_batchnorm(model)
    return model


def names(units):
    return [u.name for u in units]


def assert_partition(model, units):
    """Every prunable layer is trained by exactly one unit, and every chain module exists."""
    owned = [layer for u in units for layer in u.layers]
    assert sorted(owned) == sorted(prunable_modules(model))
    for u in units:
        for m in u.modules:
            model.get_submodule(m)


# ---------------------------------------------------------------- units per granularity
def test_resnet20_units():
    model = folded(zoo.ZOO_ARCHS.get("cifar_resnet20")(10, 1, 28))
    ad = get_adapter("resnet")
    blocks = [f"layer{s}.{i}" for s in (1, 2, 3) for i in range(3)]
    block = ad.units(model, "block")
    assert names(block) == ["conv1", *blocks, "fc"]
    assert block[0].modules == ("conv1", "bn1", "relu") and block[0].kind == "layer"
    assert block[4].layers == ("layer2.0.conv1", "layer2.0.conv2", "layer2.0.downsample.0")
    layer = ad.units(model, "layer")
    assert names(layer)[:4] == ["conv1", "layer1.0.conv1", "layer1.0.conv2", "layer1.1.conv1"]
    by_name = {u.name: u for u in layer}
    assert by_name["layer1.0.conv1"].modules == ("layer1.0.conv1", "layer1.0.bn1", "layer1.0.relu1")
    assert by_name["layer1.0.conv2"].modules == ("layer1.0.conv2", "layer1.0.bn2")  # ReLU comes after the add
    assert by_name["layer2.0.downsample.0"].modules == ("layer2.0.downsample.0", "layer2.0.downsample.1")
    single = ad.units(model, "single")
    assert names(single) == names(layer) and len(single) == 22
    assert {u.name: u for u in single}["layer1.0.conv1"].modules == ("layer1.0.conv1", "layer1.0.bn1")
    for g in ("single", "layer", "block"):
        assert_partition(model, ad.units(model, g))


def test_torchvision_resnet18_units():
    model = folded(torchvision.models.resnet18(num_classes=10))
    ad = get_adapter("resnet")
    blocks = [f"layer{s}.{i}" for s in (1, 2, 3, 4) for i in range(2)]
    assert names(ad.units(model, "block")) == ["conv1", *blocks, "fc"]
    layer = {u.name: u for u in ad.units(model, "layer")}
    assert layer["layer1.0.conv1"].modules == ("layer1.0.conv1", "layer1.0.bn1", "layer1.0.relu")
    assert layer["layer3.0.downsample.0"].modules == ("layer3.0.downsample.0", "layer3.0.downsample.1")
    assert len(layer) == 21  # stem + 8 blocks x 2 convs + 3 downsamples + fc
    for g in ("single", "layer", "block"):
        assert_partition(model, ad.units(model, g))


def test_mobilenetv2_units():
    model = folded(zoo.ZOO_ARCHS.get("small_mobilenetv2_x0.5")(10, 1, 28))
    ad = get_adapter("mobilenetv2")
    block = ad.units(model, "block")
    assert names(block) == ["features.0.0", *[f"features.{i}" for i in range(1, 9)], "features.9.0", "classifier.1"]
    assert [u.kind for u in block].count("block") == 8
    layer = {u.name: u for u in ad.units(model, "layer")}
    assert layer["features.2.conv.0.0"].modules == ("features.2.conv.0.0", "features.2.conv.0.1", "features.2.conv.0.2")
    assert layer["features.2.conv.2"].modules == ("features.2.conv.2", "features.2.conv.3")  # linear bottleneck
    single = {u.name: u for u in ad.units(model, "single")}
    assert single["features.2.conv.1.0"].modules == ("features.2.conv.1.0", "features.2.conv.1.1")
    for g in ("single", "layer", "block"):
        assert_partition(model, ad.units(model, g))


def test_vit_units_and_deit_alias():
    model = zoo.ZOO_ARCHS.get("small_vit_d64")(10, 1, 28).eval()
    ad = get_adapter("vit")
    assert type(get_adapter("deit")) is type(ad)
    assert names(ad.units(model, "block")) == [
        "patch_embed.proj",
        "blocks.0",
        "blocks.1",
        "blocks.2",
        "blocks.3",
        "head",
    ]
    layer = ad.units(model, "layer")
    assert names(layer)[:5] == [
        "patch_embed.proj",
        "blocks.0.attn.qkv",
        "blocks.0.attn.proj",
        "blocks.0.mlp.fc1",
        "blocks.0.mlp.fc2",
    ]
    assert layer[3].modules == ("blocks.0.mlp.fc1", "blocks.0.mlp.act")
    assert [u.modules for u in ad.units(model, "single")][3] == ("blocks.0.mlp.fc1",)
    for g in ("single", "layer", "block"):
        assert_partition(model, ad.units(model, g))


def test_bad_granularity_names_the_choices():
    with pytest.raises(ConfigError, match="single, layer, block"):
        get_adapter("resnet").units(nn.Linear(2, 2), "net")


# ---------------------------------------------------------------- input semantics on a 2-unit toy
class TwoUnitAdapter(ModelAdapter):
    family = "toy"

    def units(self, model, granularity):
        return [Unit("0", ("0", "1"), ("0",), "layer"), Unit("2", ("2",), ("2",), "layer")]


class Doubling(nn.Module):
    """A non-module op between the units (x * 2), so unit 2's input is not unit 1's output."""

    def __init__(self, seq):
        super().__init__()
        self.seq = seq

    def forward(self, x):
        return self.seq[2](2 * self.seq[1](self.seq[0](x)))


def toy_pair(seed=0):
    torch.manual_seed(seed)
    dense = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    sparse = copy.deepcopy(dense)
    modules = prunable_modules(sparse)
    masks = magnitude_masks(modules, {"0": 0.5, "2": 0.5})
    apply_masks(modules, masks)
    return dense, sparse, masks, torch.randn(40, 4)


@pytest.mark.parametrize("input_mode", ["dense", "sparse"])
def test_units_are_fed_the_documented_tensors(monkeypatch, input_mode):
    dense, sparse, masks, calib = toy_pair()
    seen = []
    real_train = unitwise.train_unit

    def spy(chain, weights, m, biases, x, y, s, device, progress=None):
        seen.append((x.data.clone(), y.data.clone()))
        return real_train(chain, weights, m, biases, x, y, s, device, progress)

    monkeypatch.setattr(unitwise, "train_unit", spy)
    RECONSTRUCTORS.get("layer")(
        sparse, dense, masks, calib, recon_cfg(input=input_mode, iters=30, lr=0.05), "cpu", adapter=TwoUnitAdapter()
    )
    with torch.no_grad():
        dense_h = dense[1](dense[0](calib))
        after_h = sparse[1](sparse[0](calib))  # layer 0 as reconstructed by unit 1
        assert torch.equal(seen[0][0], calib)
        assert torch.allclose(seen[0][1], dense_h)
        assert torch.allclose(seen[1][1], dense[2](dense_h))  # target: dense unit on dense input
        expected_x = dense_h if input_mode == "dense" else after_h
        assert torch.allclose(seen[1][0], expected_x)
        assert not torch.allclose(after_h, dense_h, atol=1e-3)  # the two modes really differ


@pytest.mark.parametrize("as_spine", [False, True])
def test_sparse_input_without_a_direct_link_runs_the_sparse_prefix(as_spine):
    dense, sparse, masks, calib = toy_pair()
    dense_m, sparse_m = Doubling(dense), Doubling(sparse)
    units = [Unit("seq.0", ("seq.0", "seq.1"), ("seq.0",), "layer"), Unit("seq.2", ("seq.2",), ("seq.2",), "layer")]
    feeder = UnitFeeder(
        sparse_m, dense_m, units, calib, lambda m, x: m(x), "sparse", torch.device("cpu"), "auto",
        spine=units if as_spine else (),
    )  # fmt: skip
    if as_spine:  # the x2 between the blocks is in no block: the link is refused, never skipped
        assert feeder.spine is not None and feeder.spine.links == [False]
    feeder.tensors(units[0])
    x, y = feeder.tensors(units[1])
    with torch.no_grad():
        assert torch.allclose(x.data, 2 * sparse[1](sparse[0](calib)))
        assert torch.allclose(y.data, dense[2](2 * dense[1](dense[0](calib))))
    assert feeder.shortcuts == 0
    ref_x, ref_y = unit_tensors(
        units[1].modules,
        sparse_m,
        dense_m,
        calib,
        lambda m, x: m(x),
        "sparse",
        torch.device("cpu"),
        torch.device("cpu"),
    )
    assert torch.equal(ref_x.data, x.data) and torch.allclose(ref_y.data, y.data)


# ---------------------------------------------------------------- error correction (Eq. 1)
def test_error_correction_matches_hand_computed_channels():
    dense = nn.Sequential(nn.Linear(4, 2)).eval()
    with torch.no_grad():
        dense[0].weight.copy_(torch.tensor([[1.0, 2.0, 3.0, 4.0], [-2.0, 0.0, 2.0, 4.0]]))
        dense[0].bias.copy_(torch.tensor([0.5, -1.0]))
    mask = torch.tensor([[False, False, True, True], [True, False, False, True]])
    sparse = copy.deepcopy(dense)
    apply_masks({"0": sparse[0]}, {"0": mask})
    x = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 1.0, 1.0]])  # mean input: 0.5 everywhere
    apply_error_correction(sparse, dense, {"0": mask}, x, lambda m, t: m(t), torch.device("cpu"))
    # channel 0: W_d=[1,2,3,4] (mean 2.5, var 1.25), W_s=[0,0,3,4] (mean 1.75, var 3.1875)
    lam0 = (1.25 / 3.1875) ** 0.5
    # channel 1: W_d=[-2,0,2,4] (mean 1, var 5), W_s=[-2,0,0,4] (mean 0.5, var 4.75)
    lam1 = (5.0 / 4.75) ** 0.5
    w_expected = torch.tensor(
        [
            [0.0, 0.0, 3 * lam0 + 2.5 - 1.75 * lam0, 4 * lam0 + 2.5 - 1.75 * lam0],
            [-2 * lam1 + 1 - 0.5 * lam1, 0.0, 0.0, 4 * lam1 + 1 - 0.5 * lam1],
        ]
    )
    assert torch.allclose(sparse[0].weight, w_expected, atol=1e-6)
    # bias: b_d + mean(x) . (W_d - W_hat) per row
    shift = 0.5 * (dense[0].weight - w_expected).sum(1)
    assert torch.allclose(sparse[0].bias, torch.tensor([0.5, -1.0]) + shift, atol=1e-6)
    assert torch.allclose(shift, torch.tensor([0.5 * (5 - 3.5 * lam0), 0.5 * (2 - lam1)]), atol=1e-6)


def test_error_correction_in_the_engine_equals_the_one_pass_version():
    dense, sparse, masks, calib = toy_pair(seed=1)
    reference = copy.deepcopy(sparse)
    apply_error_correction(reference, dense, masks, calib, lambda m, x: m(x), torch.device("cpu"))
    rep = RECONSTRUCTORS.get("layer")(
        sparse, dense, masks, calib, recon_cfg(error_correction=True, iters=0), "cpu", adapter=TwoUnitAdapter()
    )
    for a, b in zip(sparse.parameters(), reference.parameters()):
        assert torch.allclose(a, b, atol=1e-6)
    assert all(u["loss_after"] == u["loss_after_correction"] for u in rep["units"])


# ---------------------------------------------------------------- real models: loss down, masks kept
def zoo_setup(arch: str, rate: float, weights: str = "zoo", n_calib: int = 64):
    data = build_data(
        OmegaConf.create({"name": "mnist5k", "num_test": 1000, "split_seed": 0}),
        OmegaConf.create({"num_samples": n_calib, "seed": 0}),
    )
    model = build_model(OmegaConf.create({"arch": arch, "weights": weights, "source": "zoo"}), 10, 1, 28, "mnist5k")
    folded(model)
    dense = copy.deepcopy(model)
    for p in dense.parameters():
        p.requires_grad_(False)
    modules = prunable_modules(model)
    masks = magnitude_masks(modules, dict.fromkeys(modules, rate))
    apply_masks(modules, masks)
    return model, dense, masks, data.calib_inputs


@pytest.mark.parametrize(
    "arch,family,granularity,weights,correct",
    [
        ("cifar_resnet20", "resnet", "block", "zoo", True),
        ("small_vit_d64", "vit", "layer", "none", False),
        ("small_mobilenetv2_x0.5", "mobilenetv2", "single", "none", False),
    ],
)
def test_reconstruction_lowers_every_unit_loss_and_keeps_the_masks(arch, family, granularity, weights, correct):
    torch.manual_seed(0)
    model, dense, masks, calib = zoo_setup(arch, 0.7, weights)
    rep = RECONSTRUCTORS.get(granularity)(
        model,
        dense,
        masks,
        calib,
        recon_cfg(granularity, iters=12, error_correction=correct),
        "cpu",
        adapter=get_adapter(family),
    )
    assert rep["unreconstructed_layers"] == [] and len(rep["units"]) == rep["num_units"]
    for u in rep["units"]:
        if u["loss_before"] > 1e-9:
            assert u["loss_after"] < u["loss_before"], u
    for name, mask in masks.items():
        w = model.get_submodule(name).weight
        assert int((w == 0).sum()) == int((~mask).sum())  # exactly the pruned weights are zero
        assert torch.all(w[~mask] == 0)


def test_pipeline_records_units_and_keeps_achieved_sparsity(make_cfg):
    common = ["allocator=erk", "sparsity.rate=0.8", "calib.num_samples=64"]
    base = run(make_cfg(*common))
    rec = run(
        make_cfg(
            *common,
            "reconstruction=block",
            "reconstruction.iters=8",
            "reconstruction.batch_size=16",
            "reconstruction.progress=false",
        )
    )
    assert rec["choices"]["reconstruction"] == "block"
    assert rec["sparsity"]["zeros"] == base["sparsity"]["zeros"]
    assert rec["sparsity"]["achieved_per_layer"] == base["sparsity"]["achieved_per_layer"]
    units = rec["reconstruction"]["units"]
    assert [u["unit"] for u in units][:2] == ["conv1", "layer1.0"] and units[-1]["unit"] == "fc"
    assert all({"loss_before", "loss_after", "seconds"} <= set(u) for u in units)
    assert rec["reconstruction"]["input"] == "sparse" and rec["sparse"]["top1"] > base["sparse"]["top1"]


@pytest.mark.parametrize(
    "override,needle",
    [
        ("reconstruction.input=noisy", "reconstruction.input='noisy'; valid choices: sparse, dense"),
        ("reconstruction.optimizer=lbfgs", "valid choices: sgd, adam"),
        ("reconstruction.iters=-1", "reconstruction.iters=-1 must be an integer >= 0"),
    ],
)
def test_bad_reconstruction_knobs_fail_before_any_work(make_cfg, tmp_path, override, needle):
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        run(make_cfg("reconstruction=block", override))
    assert not (tmp_path / "out" / "records").exists()


def test_sparse_input_shortcut_equals_running_the_sparse_prefix():
    model, dense, masks, calib = zoo_setup("cifar_resnet20", 0.7, n_calib=32)
    units = get_adapter("resnet").units(model, "block")[:3]  # stem, layer1.0, layer1.1: directly linked
    feeder = UnitFeeder(model, dense, units, calib, lambda m, x: m(x), "sparse", torch.device("cpu"), "auto")
    for u in units:
        x, _ = feeder.tensors(u)
    ref = capture_input(model, units[-1].modules[0], calib, lambda m, t: m(t), torch.device("cpu"), torch.device("cpu"))
    assert feeder.shortcuts == 2
    assert torch.allclose(x.data, ref.data, atol=1e-5)


@pytest.mark.parametrize(
    "arch, family, granularity",
    [
        ("cifar_resnet20", "resnet", "single"),
        ("cifar_resnet20", "resnet", "layer"),
        ("small_mobilenetv2_x0.5", "mobilenetv2", "single"),
    ],
)
def test_block_spine_gives_every_unit_the_sparse_prefix_input_at_a_fraction_of_the_prefix_runs(
    monkeypatch, arch, family, granularity
):
    model, dense, masks, calib = zoo_setup(arch, 0.7, n_calib=24)
    adapter = get_adapter(family)
    units = adapter.units(model, granularity)
    prefix_runs = []
    real_capture = feeder_module.capture_input
    for module in (feeder_module, spine_module):  # every caller of the sparse prefix
        monkeypatch.setattr(module, "capture_input", lambda *a, **k: prefix_runs.append(a[1]) or real_capture(*a, **k))
    cpu = torch.device("cpu")
    feeder = UnitFeeder(
        model, dense, units, calib, lambda m, x: m(x), "sparse", cpu, "auto", chunk_size=8, spine=adapter.spine(model)
    )
    for u in units:
        x, _ = feeder.tensors(u)
        ref = real_capture(model, u.modules[0], calib, lambda m, t: m(t), cpu, cpu, chunk_size=8)
        assert torch.equal(x.data, ref.data), u.name  # the very tensor the sparse prefix gives
        with torch.no_grad():  # a stand-in for reconstruction: the next unit must see the changed weights
            for name in u.layers:
                model.get_submodule(name).weight.mul_(0.9)
    assert feeder.spine_captures > 0
    # the classifier after global pooling is no block's input: it (and only it) still runs the prefix
    assert len(prefix_runs) <= 2 and len(prefix_runs) < len(units) - feeder.shortcuts


def test_fast_path_knobs_bf16_and_channels_last_run_on_cpu():
    """The GPU fast path minus the CUDA graph (bf16 autocast, NHWC calibration store, channels_last
    weights) forced on CPU: losses still fall, masks hold, weights come back contiguous."""
    torch.manual_seed(0)
    model, dense, masks, calib = zoo_setup("cifar_resnet20", 0.7, n_calib=32)
    cfg = recon_cfg("block", iters=12, amp=True, channels_last=True, cuda_graphs=True)  # graphs: no-op off CUDA
    rep = RECONSTRUCTORS.get("block")(model, dense, masks, calib, cfg, "cpu", adapter=get_adapter("resnet"))
    assert rep["amp_bf16"] is True
    assert {u["path"] for u in rep["units"]} == {"eager"}
    for u in rep["units"]:
        assert u["loss_after"] < u["loss_before"], u
    for name, mask in masks.items():
        w = model.get_submodule(name).weight
        assert w.is_contiguous() and torch.all(w[~mask] == 0) and int((w == 0).sum()) == int((~mask).sum())


@pytest.mark.parametrize("family", ["nosuchnet", "generic"])
def test_layer_or_block_units_of_an_unknown_family_are_refused_naming_the_known_ones(make_cfg, tmp_path, family):
    with pytest.raises(
        ConfigError,
        match=rf"reconstruction=block needs the block units .* model.family='{family}' "
        r"has no adapter; known families: .*mobilenetv2, .*resnet, .*vit",
    ):
        run(make_cfg("reconstruction=block", f"model.family={family}"))
    assert not (tmp_path / "out" / "records").exists()


def test_single_units_of_an_unknown_family_use_every_prunable_layer():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Linear(2, 2))
    assert [u.layers for u in get_adapter("nosuchnet", "single").units(model, "single")] == [("0",), ("2",)]
    with pytest.raises(ConfigError, match="known families"):
        get_adapter(None).units(model, "layer")
