"""The model repository of the paper's Table 1 (docs/methods.md#model-repository): every architecture offline, random weights.

For each Table 1 classification architecture, built once on CPU at 32x32 with 10 classes:
- its conf/model file has name/arch/family/size/source/weights, and sizes sort like parameters;
- a forward gives finite logits; BN folding (timm's fused norm-act included) leaves no BN and
  the same outputs;
- its family adapter (not the generic fallback) splits it into units at every granularity, each
  prunable layer in exactly one unit, and every unit's chain, replayed alone on the input its
  first module receives in the model, reproduces an output its last module gives in the model;
- uniform, l2norm and erk at rate 0.7 give every prunable layer a rate whose exact pruned counts
  floor(s_l N_l) add up to floor(0.7 N) within one weight per layer; masks from
  ``masking.masks_for`` then remove exactly those counts (``measure_sparsity``).
Every architecture is allocated by all three and masked (about 5 minutes on 2 cores, ViT-L/16
alone 100 s); PTSBENCH_TEST_QUICK=1 masks only the members of at most MASK_LIMIT prunable
weights and checks the shape-only uniform/erk allocations on the rest, for quick local loops.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from ptsbench.config.spec import resolve
from ptsbench.errors import ConfigError
from ptsbench.list_models import count_params
from ptsbench.models import build_model, weights_path
from ptsbench.models.adapters import GRANULARITIES, GenericAdapter, get_adapter
from ptsbench.sparsity.allocators import build_allocator
from ptsbench.sparsity.layers import fold_batchnorm, layer_infos, prunable_modules
from ptsbench.sparsity.selection import apply_masks, magnitude_masks, measure_sparsity, num_pruned

CONF = Path(__file__).resolve().parents[1] / "conf"
TABLE1 = {  # docs/methods.md#model-repository architecture -> conf/model/<name>.yaml
    "ResNet-18": "resnet18",
    "ResNet-32": "cifar_resnet32",
    "ResNet-34": "resnet34",
    "ResNet-50": "resnet50",
    "ResNet-56": "cifar_resnet56",
    "ResNet-101": "resnet101",
    "ResNet-152": "resnet152",
    **{f"RegNetX-{mf}M": f"regnetx_{mf}m" for mf in (200, 400, 600, 800, 1600, 3200, 4000, 6400)},
    **{f"MobileNetV2-x{w}": f"mobilenetv2_x{w}" for w in ("0.5", "0.75", "1.0", "1.4")},
    **{f"MobileNetV3-x{w}": f"mobilenetv3_x{w}" for w in ("0.35", "0.5", "0.75", "1.0", "1.4")},
    **{f"ShuffleNetV2-x{w}": f"shufflenetv2_x{w}" for w in ("0.5", "1.0", "1.5", "2.0")},
    "VGG-19": "vgg19",
    "VGG-19 (CIFAR)": "cifar_vgg19",
    "ViT-B/16": "vit_b16",
    "ViT-B/32": "vit_b32",
    "ViT-L/16": "vit_l16",
    "DeiT-Ti": "deit_ti",
    "DeiT-S": "deit_s",
    "DeiT-B": "deit_b",
}
FAMILIES = {"resnet", "regnetx", "mobilenetv2", "mobilenetv3", "shufflenetv2", "vgg", "vit", "deit"}
RATE = 0.7
MASK_LIMIT = 2_500_000
MASK_ALL = os.environ.get("PTSBENCH_TEST_QUICK") != "1"


def model_cfg(name: str):
    cfg = OmegaConf.load(CONF / "model" / f"{name}.yaml")
    cfg.weights = "none"
    return cfg


def test_every_table1_architecture_has_a_complete_model_config():
    sizes = defaultdict(list)
    for arch, name in TABLE1.items():
        raw = OmegaConf.load(CONF / "model" / f"{name}.yaml")
        assert {"name", "arch", "family", "size", "source", "weights"} <= set(raw), arch
        assert raw.name == name and raw.family in FAMILIES and raw.source in {"torchvision", "timm", "zoo"}
        sizes[(raw.family, raw.trained_on)].append((str(raw.size), count_params(model_cfg(name))))
    # the size label sorts like the parameter count within a family (per training dataset)
    for group, members in sizes.items():
        assert sorted(members) == sorted(members, key=lambda m: m[1]), group
    assert {f for f, _ in sizes} == FAMILIES


def _perturb_batchnorm(model: nn.Module, gen: torch.Generator) -> None:
    """Non-trivial BN statistics, so folding them is a real test."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(0.1 * torch.randn(c, generator=gen))
            m.running_var.copy_(0.5 + torch.rand(c, generator=gen))
            m.weight.data.copy_(0.5 + torch.rand(c, generator=gen))
            m.bias.data.copy_(0.1 * torch.randn(c, generator=gen))


def _close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-4) -> bool:
    return a.shape == b.shape and bool(((a - b).abs().max() <= tol * (1.0 + a.abs().max())).item())


def check_units_replay(model: nn.Module, units, x: torch.Tensor) -> None:
    """Each unit's chain run alone on its captured input gives one of its last module's outputs."""
    inputs, outputs, handles = {}, defaultdict(list), []
    for name in {u.modules[0] for u in units}:
        handles.append(
            model.get_submodule(name).register_forward_pre_hook(
                lambda _m, args, name=name: inputs.setdefault(name, args[0].clone())
            )
        )
    for name in {u.modules[-1] for u in units}:
        handles.append(
            model.get_submodule(name).register_forward_hook(
                lambda _m, _a, out, name=name: outputs[name].append(out.clone())
            )
        )
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    for u in units:
        h = inputs[u.modules[0]].clone()
        for name in u.modules:
            h = model.get_submodule(name)(h)
        assert any(_close(o, h) for o in outputs[u.modules[-1]]), f"unit {u.name} {u.modules} does not replay"


def check_allocation(modules: dict[str, nn.Module], mask: bool) -> None:
    infos = layer_infos(modules)
    n_total = sum(i.numel for i in infos)
    originals = {n: m.weight.detach().clone() for n, m in modules.items()} if mask else {}
    for allocator in ("uniform", "l2norm", "erk") if mask else ("uniform", "erk"):
        weights = {n: m.weight.detach() for n, m in modules.items()}
        rates = build_allocator(allocator).allocate(infos, weights, RATE)
        assert set(rates) == set(modules) and all(0.0 <= r <= 1.0 for r in rates.values()), allocator
        counts = {i.name: num_pruned(rates[i.name], i.numel) for i in infos}
        assert abs(sum(counts.values()) - math.floor(RATE * n_total)) <= len(infos), allocator
        if not mask:
            continue
        apply_masks(modules, magnitude_masks(modules, rates))
        achieved = measure_sparsity(modules)
        assert {n: round(r * modules[n].weight.numel()) for n, r in achieved["per_layer"].items()} == counts
        assert abs(achieved["global"] - RATE) <= len(infos) / n_total, allocator
        with torch.no_grad():
            for n, m in modules.items():
                m.weight.copy_(originals[n])


@pytest.mark.parametrize("arch", list(TABLE1))
@torch.no_grad()
def test_architecture_builds_folds_splits_into_units_and_masks_exactly(arch):
    cfg = model_cfg(TABLE1[arch])
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = build_model(cfg, num_classes=10, in_chans=3, img_size=32, dataset_name="imagenet")
    _perturb_batchnorm(model, gen)
    x = torch.randn(2, 3, 32, 32, generator=gen)
    logits = model(x)
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()

    fold_batchnorm(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules()), "a BatchNorm was left unfolded"
    assert _close(logits, model(x), tol=1e-3)

    adapter = get_adapter(cfg.family)
    assert not isinstance(adapter, GenericAdapter), f"no adapter registered for family {cfg.family}"
    modules = prunable_modules(model)
    for granularity in GRANULARITIES:
        units = adapter.units(model, granularity)
        covered = [layer for u in units for layer in u.layers]
        assert sorted(covered) == sorted(modules), f"{granularity}: units do not cover each layer once"
        if granularity == "block":
            assert any(u.kind == "block" for u in units)
        else:
            assert all(len(u.layers) == 1 and u.kind == granularity for u in units)
        check_units_replay(model, units, x)

    n_weights = sum(m.weight.numel() for m in modules.values())
    check_allocation(modules, mask=MASK_ALL or n_weights <= MASK_LIMIT)


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_local_checkpoints_load_in_torchvision_and_timm_formats(tmp_path):
    from safetensors.torch import save_file

    cfg = model_cfg("resnet18")
    src = build_model(cfg, 10, 3, 32, "imagenet")
    # a training checkpoint: DDP prefixes, wrapped under "state_dict" beside other entries
    torch.save(
        {"state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}, "epoch": 3}, tmp_path / "r18.pth"
    )
    cfg.weights = str(tmp_path / "r18.pth")
    torch.manual_seed(1)
    assert _same_weights(src, build_model(cfg, 10, 3, 32, "imagenet"))

    deit = model_cfg("deit_ti")
    src = build_model(deit, 10, 3, 32, "imagenet")
    save_file(src.state_dict(), str(tmp_path / "deit.safetensors"))
    deit.weights = str(tmp_path / "deit.safetensors")
    assert _same_weights(src, build_model(deit, 10, 3, 32, "imagenet"))
    # timm's filter adapts the checkpoint to the model as built: position embeddings of 4x4 -> 6x6 patches
    at_96 = build_model(deit, 10, 3, 96, "imagenet")
    assert at_96.pos_embed.shape[1] == 1 + 36 and torch.equal(
        at_96.blocks[0].mlp.fc1.weight, src.blocks[0].mlp.fc1.weight
    )

    other = model_cfg("resnet34")
    other.weights = str(tmp_path / "r18.pth")
    with pytest.raises(ConfigError, match=r"r18.pth does not fit model 'resnet34'.*Missing key"):
        build_model(other, 10, 3, 32, "imagenet")


def test_missing_checkpoints_say_how_to_point_at_the_weights(tmp_path, make_cfg):
    cfg = model_cfg("resnet18")
    cfg.weights = str(tmp_path / "nowhere.pth")
    with pytest.raises(ConfigError, match=r"checkpoint '.*nowhere.pth' not found; .*model.weights=/path/to/ckpt.pt"):
        weights_path(cfg, "imagenet")
    cfg.weights = "timm"
    with pytest.raises(
        ConfigError,
        match="model.weights=timm loads timm's published weights, but model 'resnet18' "
        "is built by model.source=torchvision",
    ):
        weights_path(cfg, "imagenet")
    v2 = OmegaConf.load(CONF / "model" / "mobilenetv2_x0.5.yaml")
    v2.weights = "torchvision"
    with pytest.raises(
        ConfigError,
        match=r"torchvision publishes no weights for 'mobilenetv2_x0.5'.*"
        r"model.weights=/path/to/mobilenetv2_x0.5.pth",
    ):
        weights_path(v2, "imagenet")
    # a model whose weights no library publishes must be given them (or weights=none)
    with pytest.raises(
        ConfigError,
        match=r"model.weights is required: no library publishes weights for model "
        r"'cifar_resnet56'; pass a local checkpoint, model.weights=/path/to/",
    ):
        resolve(make_cfg("model=cifar_resnet56", "dataset=cifar10", f"dataset.root={tmp_path}"))


def test_published_weights_are_read_from_the_local_caches_only(tmp_path, monkeypatch):
    from huggingface_hub import constants
    from safetensors.torch import save_file

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    r18 = model_cfg("resnet18")
    r18.weights = "torchvision"
    with pytest.raises(
        ConfigError,
        match=r"weights 'ResNet18_Weights.IMAGENET1K_V1' are not in the local cache, and "
        r"PTSBench never downloads. Looked for: .*torch/hub/checkpoints/"
        r"resnet18-f37072fd.pth.*model.weights=/path/to/resnet18-f37072fd.pth",
    ):
        weights_path(r18, "imagenet")
    deit = model_cfg("deit_ti")
    deit.weights = "timm"
    with pytest.raises(
        ConfigError, match=r"models--timm--deit_tiny_patch16_224.fb_in1k/snapshots/\*/model.safetensors"
    ):
        weights_path(deit, "imagenet")

    # the same files, once in the caches, are found and loaded
    src = build_model(model_cfg("resnet18"), 1000, 3, 224, "imagenet")
    (tmp_path / "torch" / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(src.state_dict(), tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth")
    assert _same_weights(src, build_model(r18, 1000, 3, 224, "imagenet"))
    src = build_model(model_cfg("deit_ti"), 1000, 3, 224, "imagenet")
    repo = tmp_path / "hf" / "models--timm--deit_tiny_patch16_224.fb_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    save_file(src.state_dict(), str(repo / "snapshots" / "abc123" / "model.safetensors"))
    assert _same_weights(src, build_model(deit, 1000, 3, 224, "imagenet"))
