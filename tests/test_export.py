"""Sparse checkpoints (bitmask + non-zeros) and ptsbench-export: the byte layout by hand, exact round trips,
a run's model rebuilt from its record reproducing the recorded sparse metric, and the refusals."""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf

from ptsbench.export.cli import export, main, reevaluate
from ptsbench.export.run_model import checkpoint_path, model_sizes, rebuild_model
from ptsbench.export.sparse_checkpoint import compress_weight, decompress_weight, load_sparse, save_sparse, size_bytes
from ptsbench.models import build_model
from ptsbench.run import run
from ptsbench.sparsity.allocators.erk import erk_densities
from ptsbench.sparsity.deployable import is_deployable_nm
from ptsbench.sparsity.layers import fold_batchnorm, prunable_modules
from ptsbench.sparsity.selection import apply_masks, magnitude_masks

FAST = ["calib.num_samples=64", "eval.max_samples=200"]


def test_bitmask_layout_of_a_hand_built_weight():
    w = torch.tensor([[1.0, 0, 0, 2, 0, 0, 0, 0, 0, 3], [0, 0, 0, 0, 0, 0, 0, 0, 4, 0]])
    parts = compress_weight(w)
    assert parts["shape"].tolist() == [2, 10]
    assert parts["compressed"].tolist() == [1.0, 2.0, 3.0, 4.0]
    # little-endian bits: row 0 sets bits 0, 3 (byte 9) and 9 (byte 1, bit 1 -> 2); row 1 sets bit 8
    assert parts["bitmask"].tolist() == [[9, 2], [0, 1]]
    assert parts["row_offsets"].tolist() == [0, 3]
    assert torch.equal(decompress_weight(parts), w)


def test_round_trip_is_exact_for_conv_weights_empty_rows_and_signed_zeros():
    torch.manual_seed(0)
    w = torch.randn(6, 3, 3, 3) * (torch.rand(6, 3, 3, 3) > 0.7)
    w[2] = 0.0
    back = decompress_weight(compress_weight(w))
    assert back.shape == w.shape and torch.equal(back, w)
    assert torch.equal(back != 0, w != 0)


def test_size_bytes_counts_the_payload_and_keeps_dense_what_would_grow():
    w = torch.zeros(4, 16)
    w[:, :4] = 1.0  # 75% zeros: 16 values
    dense_layer = torch.ones(4, 16)
    state = {"a.weight": w, "a.bias": torch.ones(4), "b.weight": dense_layer}
    sizes = size_bytes(state, ["a.weight", "b.weight"])
    assert sizes["dense"] == (64 + 4 + 64) * 4
    # a.weight: shape 2 x 8 + values 16 x 4 + bitmask 4 x 2 + offsets 4 x 8 = 120; bias 16; b.weight dense 256
    assert sizes["compressed"] == 120 + 16 + 256


def test_checkpoint_file_round_trip_keeps_every_tensor_and_the_metadata(tmp_path):
    torch.manual_seed(0)
    state = {"conv.weight": torch.randn(8, 4, 3, 3) * (torch.rand(8, 4, 3, 3) > 0.5), "conv.bias": torch.randn(8)}
    path = save_sparse(tmp_path / "m.safetensors", state, ["conv.weight"], {"config": {"model": {"arch": "x"}}})
    back, meta = load_sparse(path)
    assert set(back) == set(state) and all(torch.equal(back[k], state[k]) for k in state)
    assert meta["compressed"] == ["conv.weight"] and meta["config"] == {"model": {"arch": "x"}}


def test_zoo_resnet56_at_0_8_compresses_to_at_most_35_percent_of_dense_fp32():
    model = build_model(
        OmegaConf.create({"arch": "cifar_resnet56", "source": "zoo", "weights": "zoo"}), 10, 1, 28, "mnist5k"
    )
    fold_batchnorm(model)
    modules = prunable_modules(model)
    for name, rates in (("uniform", dict.fromkeys(modules, 0.8)), ("erk", None)):
        if rates is None:
            dens = erk_densities({n: tuple(m.weight.shape) for n, m in modules.items()}, 0.8)
            rates = {n: 1 - d for n, d in dens.items()}
        pruned = build_model(
            OmegaConf.create({"arch": "cifar_resnet56", "source": "zoo", "weights": "zoo"}), 10, 1, 28, "mnist5k"
        )
        fold_batchnorm(pruned)
        mods = prunable_modules(pruned)
        apply_masks(mods, magnitude_masks(mods, rates))
        sizes = model_sizes(pruned, mods)
        ratio = sizes["compressed"] / sizes["dense"]
        print(f"zoo ResNet-56, {name} 0.8, BN folded: {sizes['compressed']:,} / {sizes['dense']:,} bytes = {ratio:.1%}")
        assert ratio <= 0.35


def test_export_round_trip_reproduces_the_records_sparse_metric_and_mask(make_cfg, tmp_path):
    rec = run(make_cfg("allocator=erk", "sparsity.rate=0.6", "save.model=true", *FAST))
    record_path = tmp_path / "out" / "records" / f"{rec['name']}.json"
    assert rec["saved_model"] == checkpoint_path(record_path).name and checkpoint_path(record_path).exists()
    assert rec["size_bytes"]["compressed"] < 0.5 * rec["size_bytes"]["dense"]
    # the non-zeros are the magnitude mask at the record's per-layer rates, recomputed from the zoo weights
    dense = build_model(OmegaConf.create(rec["config"]["model"]), 10, 1, 28, "mnist5k")
    fold_batchnorm(dense)
    dense_modules = prunable_modules(dense)
    masks = magnitude_masks(dense_modules, rec["sparsity"]["target_per_layer"])

    out = export(record_path, "dense", tmp_path / "model.pt")
    state = torch.load(out, weights_only=True)
    for name, mask in masks.items():
        assert torch.equal(state[f"{name}.weight"] != 0, mask), name
    model, meta = rebuild_model(checkpoint_path(record_path))
    assert meta["digest"] == rec["digest"]
    again = reevaluate(model, rec)
    assert again == rec["sparse"] and rec["sparse"]["top1"] > 0.8  # every metric, bit for bit

    compressed = export(record_path, "compressed", tmp_path / "model.safetensors")
    back, _ = load_sparse(compressed)
    assert set(back) == set(state) and all(torch.equal(back[k], state[k]) for k in state)
    assert main([str(record_path), "--format", "dense", "--out", str(tmp_path / "again.pt"), "--verify"]) == 0


def test_sparsegpt_two_four_run_saves_a_model_deployable_on_every_fitting_layer(make_cfg, tmp_path):
    rec = run(make_cfg("sparsity=nm", "reconstruction=sparsegpt", "save.model=true", *FAST))
    dep = rec["masks"]["deployable"]
    assert dep["violating"] == [] and dep["misfit"] == rec["masks"]["dense_layers"] == ["conv1"]
    model, _ = rebuild_model(tmp_path / "out" / "records" / rec["saved_model"])
    for name in dep["deployable"]:
        assert is_deployable_nm(model.get_submodule(name).weight, 2, 4), name


def test_onnx_export_matches_the_torch_model(make_cfg, tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    from onnx.reference import ReferenceEvaluator

    rec = run(make_cfg("model=zoo_vit_d64", "sparsity.rate=0.5", "save.model=true", *FAST))
    record_path = tmp_path / "out" / "records" / f"{rec['name']}.json"
    out = export(record_path, "onnx", tmp_path / "model.onnx")
    model, _ = rebuild_model(checkpoint_path(record_path))
    x = torch.randn(1, 1, 28, 28)
    (got,) = ReferenceEvaluator(str(out)).run(None, {ReferenceEvaluator(str(out)).input_names[0]: x.numpy()})
    torch.testing.assert_close(torch.from_numpy(got), model(x).detach(), atol=1e-4, rtol=1e-4)


def test_export_refusals_say_what_to_do(make_cfg, tmp_path, capsys, monkeypatch):
    rec = run(make_cfg("sparsity.rate=0.5", *FAST))
    record_path = tmp_path / "out" / "records" / f"{rec['name']}.json"
    assert main([str(record_path), "--format", "dense", "--out", str(tmp_path / "m.pt")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: {record_path}: no saved model beside it ({record_path.stem}.safetensors); "
        "re-run the configuration with save.model=true"
    )
    failed = tmp_path / "failed.json"
    failed.write_text(json.dumps({**rec, "status": "failed"}))
    assert main([str(failed), "--format", "dense", "--out", str(tmp_path / "m.pt")]) == 2
    assert "the run did not finish ok (status 'failed')" in capsys.readouterr().err
    checkpoint_path(failed).write_bytes(b"")
    monkeypatch.setattr("ptsbench.export.cli.missing_onnx_packages", lambda: ["onnxscript"])
    failed.write_text(json.dumps(rec))
    assert main([str(failed), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: --format onnx: torch.onnx.export needs the package(s) onnxscript, which are not installed; "
        "pip install 'ptsbench[export]' (or onnx onnxscript)"
    )
