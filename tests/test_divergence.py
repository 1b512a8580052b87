"""A diverging reconstruction or a NaN weight never yields an ok record with NaN: pruned weights stay
exactly zero, diverged units get their weights back and say so."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ptsbench.models import zoo, zoo_checkpoint_path
from ptsbench.pipeline import run
from ptsbench.reconstruction.trainer import TrainSettings, train_unit
from ptsbench.reconstruction.unit_data import CalibTensor

ROOT = Path(__file__).resolve().parents[1]
TINY = ["dataset.num_test=100", "calib.num_samples=32", "eval.batch_size=100"]


def zoo_state(seed: int | None = None) -> dict:
    if seed is None:
        return torch.load(zoo_checkpoint_path("cifar_resnet20", "mnist5k"), map_location="cpu", weights_only=True)
    torch.manual_seed(seed)
    return zoo.ZOO_ARCHS.get("cifar_resnet20")(10, 1, 28).state_dict()


def cli(*args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ptsbench.run", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def records(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((out / "records").glob("*.json"))]


def test_remask_keeps_pruned_weights_exactly_zero_when_training_diverges():
    torch.manual_seed(0)
    layer = torch.nn.Linear(8, 4)
    mask = torch.rand(4, 8) > 0.5
    with torch.no_grad():
        layer.weight.mul_(mask)
    x = CalibTensor(torch.randn(64, 8) * 1e3, nhwc=False)
    y = CalibTensor(torch.randn(64, 4), nhwc=False)
    s = TrainSettings(iters=30, batch_size=16, optimizer="sgd", lr=1e6, lr_bias=1e6, momentum=0.9)
    train_unit(layer, [layer.weight], [mask], [layer.bias], x, y, s, torch.device("cpu"))
    assert not torch.isfinite(layer.weight[mask]).all()  # the kept weights blew up ...
    assert (layer.weight[~mask] == 0).all()  # ... the pruned ones stayed exactly 0 (not NaN*0)


def test_diverged_units_get_their_weights_back_and_are_marked(make_cfg):
    rec = run(
        make_cfg(
            *TINY,
            "reconstruction=single",
            "reconstruction.lr=1e6",
            "reconstruction.iters=5",
            "reconstruction.progress=false",
            "sparsity.rate=0.5",
        )
    )
    units = rec["reconstruction"]["units"]
    diverged = [u for u in units if u["diverged"]]
    assert diverged and rec["reconstruction"]["diverged_units"] == [u["unit"] for u in diverged]
    for u in diverged:  # restored: the loss is the one before training
        assert u["loss_after"] == pytest.approx(u["loss_before"], rel=1e-6)
    sp = rec["sparsity"]
    assert all(sp["achieved_per_layer"][k] == pytest.approx(t, abs=1e-3) for k, t in sp["target_per_layer"].items())
    assert rec["status"] == "ok" and rec["sparse"]["top1"] == rec["sparse"]["top1"]


def test_a_model_with_a_nan_weight_is_never_ok(make_cfg, tmp_path):
    state = zoo_state()
    state["fc.bias"][3] = float("nan")
    torch.save(state, tmp_path / "nan.pt")
    with pytest.raises(FloatingPointError, match="fc.bias"):
        run(make_cfg(*TINY, f"model.weights={tmp_path / 'nan.pt'}"))
    (rec,) = records(tmp_path / "out")
    assert rec["status"] == "failed" and rec["error"]["phase"] == "check_weights" and "sparse" not in rec
