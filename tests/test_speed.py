"""Sparse layer backends compute what the dense layers compute, the latency planner's choice and cache, and the
theoretical FLOP count by hand. No timing is asserted: speed is printed by scripts/bench_sparse_kernels.py."""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from ptsbench.models import build_model
from ptsbench.run import run
from ptsbench.sparsity.layers import fold_batchnorm, prunable_modules
from ptsbench.sparsity.selection import apply_masks, magnitude_masks, nm_keep_mask
from ptsbench.speed import latency
from ptsbench.speed.flops import flop_counts, from_sparsity, model_flops
from ptsbench.speed.sparse_layers import CSRGemm, candidates, gemm_capable, make_sparse


def _sparse(t: torch.Tensor, rate: float) -> torch.Tensor:
    return t * (torch.rand_like(t) > rate)


@pytest.mark.parametrize(
    "layer, x",
    [
        (nn.Linear(24, 16), torch.randn(3, 5, 24)),  # tokens: the last axis is the features
        (nn.Linear(24, 16, bias=False), torch.randn(7, 24)),
        (nn.Conv2d(8, 12, 1), torch.randn(2, 8, 5, 6)),
        (nn.Conv2d(8, 12, 1, stride=2, bias=False), torch.randn(2, 8, 7, 5)),
    ],
)
def test_csr_layers_compute_the_dense_layers_output(layer, x):
    torch.manual_seed(0)
    with torch.no_grad():
        layer.weight.copy_(_sparse(layer.weight, 0.7))
        want = layer(x)
        got = CSRGemm(layer)(x)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_swapping_every_gemm_layer_of_a_zoo_model_keeps_its_outputs():
    torch.manual_seed(0)
    model = build_model(
        OmegaConf.create({"arch": "small_mobilenetv2_x0.5", "source": "zoo", "weights": "zoo"}), 10, 1, 28, "mnist5k"
    )
    fold_batchnorm(model)
    modules = prunable_modules(model)
    apply_masks(modules, magnitude_masks(modules, dict.fromkeys(modules, 0.8)))
    swapped = latency.swap_layers(model, {n: "csr" if gemm_capable(m) else "dense" for n, m in modules.items()})
    n_csr = sum(isinstance(m, CSRGemm) for m in swapped.modules())
    assert n_csr == sum(gemm_capable(m) for m in modules.values()) > 10
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(swapped(x), model(x), atol=1e-4, rtol=1e-4)


def test_candidates_per_layer_and_device():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")  # only the rule is checked: no GPU is touched
    assert candidates(nn.Linear(8, 4), cpu, None, torch.float32) == ["dense", "csr"]
    assert candidates(nn.Conv2d(8, 4, 1, stride=2), cpu, None, torch.float32) == ["dense", "csr"]
    for conv in (nn.Conv2d(8, 4, 3), nn.Conv2d(8, 8, 1, groups=8), nn.Conv2d(8, 4, 1, padding=1)):
        assert candidates(conv, cpu, None, torch.float32) == ["dense"]
    lin = nn.Linear(128, 64)
    with torch.no_grad():
        lin.weight.mul_(nm_keep_mask(lin.weight.abs(), 2, 4))
    assert candidates(lin, cuda, (2, 4), torch.float16) == ["dense", "csr", "semi_structured"]
    assert candidates(lin, cuda, None, torch.float16) == ["dense", "csr"]
    assert candidates(nn.Linear(12, 10), cuda, (2, 4), torch.float16) == ["dense", "csr"]  # below the (16, 16) block
    assert candidates(lin, cuda, (2, 4), torch.float32) == ["dense", "csr"]  # cuSPARSELt takes no float32
    with pytest.raises(ValueError, match="backend='bsr'; valid choices: dense, csr, semi_structured"):
        make_sparse(lin, "bsr")


def test_a_sparse_backend_is_chosen_only_when_clearly_faster():
    assert latency.choose({"dense": 10.0, "csr": 9.6}) == "dense"
    assert latency.choose({"dense": 10.0, "csr": 9.4}) == "csr"
    assert latency.choose({"dense": 10.0, "csr": 30.0}) == "dense"
    assert latency.choose({"dense": 1.0}) == "dense"


def test_latency_record_and_the_per_shape_cache(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 1), nn.Flatten(), nn.Linear(16 * 36, 10)
    )
    modules = {n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    apply_masks(modules, magnitude_masks(modules, dict.fromkeys(modules, 0.9)))
    cache = tmp_path / "backends.json"
    monkeypatch.setattr(latency, "_CACHE", {})
    x = torch.randn(2, 4, 6, 6)
    rec = latency.measure_latency(model, modules, x, lambda m, b: m(b), "cpu", warmup=1, repeats=3, cache_path=cache)
    assert rec["batch_size"] == 2 and rec["dtype"] == "float32" and rec["torch"] == torch.__version__
    assert set(rec["layers"]) == set(modules) and sum(rec["backends"].values()) == 3
    assert rec["layers"]["0"]["ms"].keys() == {"dense"}  # a 3x3 conv has no sparse backend
    assert rec["layers"]["2"]["ms"].keys() == rec["layers"]["4"]["ms"].keys() == {"dense", "csr"}
    assert rec["layers"]["4"]["input_shape"] == [2, 576] and rec["layers"]["4"]["density"] == pytest.approx(
        0.1, abs=2e-3
    )
    for p in rec["layers"].values():
        assert p["backend"] == latency.choose(p["ms"])
    assert rec["speedup"] == rec["dense_ms"] / rec["sparse_ms"]
    assert len(json.loads(cache.read_text())) == 3
    # a fresh process reads the cache file: no layer is benchmarked again, only the two end-to-end models
    monkeypatch.setattr(latency, "_CACHE", {})
    built = []
    monkeypatch.setattr(latency, "make_sparse", lambda m, b: built.append(b) or m)
    again = latency.measure_latency(model, modules, x, lambda m, b: m(b), "cpu", warmup=1, repeats=3, cache_path=cache)
    assert built == [b for b in again["backends"] for _ in range(again["backends"][b]) if b != "dense"]
    assert {n: p["ms"] for n, p in again["layers"].items()} == {n: p["ms"] for n, p in rec["layers"].items()}


def test_flop_counts_by_hand():
    # conv 4 -> 8, 3x3 on 6x6 with padding 1: 36 positions; head 8 -> 10 on one token
    numel, positions = {"conv": 288, "fc": 80}, {"conv": 36, "fc": 1}
    counts = flop_counts({"conv": 72, "fc": 40}, numel, positions)
    assert counts == {"dense": 288 * 36 + 80, "sparse": 72 * 36 + 40, "reduction": (288 * 36 + 80) / (72 * 36 + 40)}
    assert from_sparsity({"conv": 0.75, "fc": 0.5}, numel, positions) == counts
    assert flop_counts({"conv": 0, "fc": 0}, numel, positions)["reduction"] == float("inf")


def test_model_flops_counts_output_positions_of_convs_and_token_linears():
    model = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1, stride=2), nn.Flatten(2), nn.Linear(9, 5))
    modules = {"0": model[0], "2": model[2]}
    with torch.no_grad():
        model[0].weight.zero_()
        model[0].weight[:, :2] = 1.0  # half the conv's weights
    flops = model_flops(model, modules, lambda m, b: m(b), torch.randn(3, 4, 6, 6))
    assert flops["positions"] == {"0": 9, "2": 8}  # 3x3 output pixels; 8 tokens (the conv's channels) of 9 features
    assert flops["dense"] == 288 * 9 + 45 * 8 and flops["sparse"] == 144 * 9 + 45 * 8
    assert model_flops(model, modules, lambda m, b: m(b), torch.empty(0, 4, 6, 6)) is None


def test_a_run_with_eval_latency_records_times_backends_and_flops(make_cfg):
    rec = run(
        make_cfg(
            "sparsity.rate=0.9",
            "eval.latency=true",
            "eval.latency_batch_size=4",
            "eval.latency_repeats=3",
            "calib.num_samples=8",
            "eval.max_samples=100",
        )
    )
    lat = rec["latency"]
    assert lat["batch_size"] == 4 and lat["repeats"] == 3 and lat["device"] == "cpu"
    assert set(lat["layers"]) == set(rec["sparsity"]["target_per_layer"])
    assert rec["flops"]["reduction"] > 5 and set(rec["flops"]["positions"]) == set(lat["layers"])
    assert "latency" in rec["timing"]
