"""Nothing a user passes is unpickled by the real unpickler (ptsbench.safe_load).

A payload (a pickled object whose ``__reduce__`` is ``os.system("touch MARKER")``) is written in
every format PTSBench reads: a zip and a legacy ``torch.save`` file, a plain pickle, a Lightning /
CompVis ``.ckpt``, an mmengine checkpoint with metadata, and a CIFAR batch. Each is fed to every
loader and entry point (``model.weights=`` of the zoo and of a library source through
``python -m ptsbench.run``, ``ptsbench-convert-ldm --ckpt``, the mmdet source's reader, the
embedded DDPM's reader, ``dataset=cifar10 dataset.root=``): no marker file appears and the refusal
is one line that names the Python object and the accepted formats, never ``weights_only=False``.
Legitimate training checkpoints still yield their tensors.
"""

from __future__ import annotations

import argparse
import os
import pickle
import shutil
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from ptsbench import safe_load
from ptsbench.data import cifar
from ptsbench.errors import ConfigError
from ptsbench.models import checkpoints, detection_mmdet, diffusion_zoo, ldm_convert
from ptsbench.pipeline import run

ROOT = Path(__file__).resolve().parents[1]
SYSTEM = f"{os.system.__module__}.system"  # how a pickle names os.system (posix.system on Linux)


class Payload:
    """Unpickled by the real unpickler, this runs ``touch <marker>``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class ConfigDict(dict):
    """Shaped like mmengine's ConfigDict (a dict subclass with attributes): pickled by reference."""


class HistoryBuffer:
    def __init__(self, values):
        self._log_history = np.asarray(values)
        self._count_history = np.ones(len(values))


def _state() -> OrderedDict:
    torch.manual_seed(0)
    return OrderedDict(weight=torch.randn(4, 3), bias=torch.randn(4))


def write_payload(fmt: str, path: Path, marker: Path, state=None) -> Path:
    """``state`` None: the payload stands where the tensors belong; else it hides in the metadata."""
    tensors = Payload(marker) if state is None else state
    if fmt == "zip":
        torch.save({"state_dict": tensors, "extra": Payload(marker)}, path)
    elif fmt == "legacy":
        torch.save({"state_dict": tensors, "extra": Payload(marker)}, path, _use_new_zipfile_serialization=False)
    elif fmt == "plain":
        with open(path, "wb") as f:
            pickle.dump({"state_dict": tensors, "extra": Payload(marker)}, f)
    elif fmt == "lightning":
        ckpt = {
            "epoch": 3,
            "global_step": 10,
            "state_dict": tensors,
            "hyper_parameters": {"cfg": OmegaConf.create({"lr": 0.1}), "args": argparse.Namespace(x=1)},
            "callbacks": {"ModelCheckpoint": {"best_model_path": Payload(marker)}},
            "optimizer_states": [{"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}]}],
        }
        torch.save(ckpt, path)
    elif fmt == "mmengine":
        meta = {"mmdet_version": "3.3.0", "cfg": ConfigDict(lr=0.01), "seed": np.int64(3), "hook": Payload(marker)}
        hub = {"log_scalars": {"loss": HistoryBuffer([1.0, 0.5])}}
        torch.save({"meta": meta, "state_dict": tensors, "message_hub": hub}, path)
    else:
        raise ValueError(fmt)
    return path


FORMATS = ("zip", "legacy", "plain", "lightning", "mmengine")


def _one_line_refusal(e: ConfigError, knob: str, path: Path) -> str:
    msg = str(e)
    assert "\n" not in msg and msg.startswith(f"{knob}: {path}"), msg
    assert f"`{SYSTEM}`" in msg and "which PTSBench does not run" in msg, msg
    assert "weights_only" not in msg
    return msg


def test_the_payload_is_live_under_the_real_unpickler(tmp_path):
    marker = tmp_path / "MARK"
    pickle.loads(pickle.dumps(Payload(marker)))
    assert marker.exists()  # so a missing marker below means the loader did not run it


LOADERS = {
    "safe_load": lambda p: safe_load.read_state_dict(p, "model.weights"),
    "model.weights (zoo/torchvision/timm/ssd)": checkpoints.read_state_dict,
    "mmdet": detection_mmdet.read_mmdet_weights,
    "convert-ldm": ldm_convert.read_checkpoint,
    "ddpm": lambda p: diffusion_zoo.load_unet(str(p)),
}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("loader", list(LOADERS))
def test_every_loader_refuses_a_payload_in_every_format_without_running_it(tmp_path, fmt, loader):
    marker = tmp_path / "MARK"
    path = write_payload(fmt, tmp_path / f"evil.{fmt}", marker)
    with pytest.raises(ConfigError) as e:
        LOADERS[loader](path)
    knob = "--ckpt" if loader == "convert-ldm" else "model.weights"
    msg = _one_line_refusal(e.value, knob, path)
    assert "accepted: a torch.save file of tensors" in msg and ".safetensors" in msg
    assert not marker.exists()


@pytest.mark.parametrize("fmt", ["zip", "legacy", "lightning", "mmengine"])
def test_a_payload_in_the_metadata_stays_inert_and_the_tensors_load(tmp_path, fmt):
    marker = tmp_path / "MARK"
    path = write_payload(fmt, tmp_path / f"meta.{fmt}", marker, state=_state())
    for loader in (checkpoints.read_state_dict, detection_mmdet.read_mmdet_weights, ldm_convert.read_checkpoint):
        state = loader(path)
        assert list(state) == ["weight", "bias"] and torch.equal(state["weight"], _state()["weight"])
    tree, inert = safe_load.read_checkpoint(path, "model.weights")
    assert SYSTEM in inert and not marker.exists()
    assert isinstance(tree["state_dict"], OrderedDict)


def test_mmengine_metadata_becomes_placeholders_that_imported_nothing(tmp_path):
    path = write_payload("mmengine", tmp_path / "epoch_12.pth", tmp_path / "MARK", state=_state())
    tree, inert = safe_load.read_checkpoint(path, "model.weights")
    cfg = tree["meta"]["cfg"]
    assert isinstance(cfg, safe_load.InertGlobal) and cfg.qualname == f"{__name__}.ConfigDict"
    assert cfg.items == {"lr": 0.01}  # a dict subclass filled item by item, into the placeholder
    assert f"{__name__}.HistoryBuffer" in inert and not isinstance(tree["meta"]["seed"], np.integer)


def test_real_mmengine_checkpoint_loads_when_mmengine_is_installed(tmp_path):
    pytest.importorskip("mmengine")
    from mmengine.config import ConfigDict as MMConfigDict
    from mmengine.logging import HistoryBuffer as MMHistoryBuffer

    path = tmp_path / "epoch_1.pth"
    torch.save(
        {
            "meta": {"cfg": MMConfigDict(model=dict(type="RetinaNet")), "seed": np.int64(3)},
            "state_dict": {f"module.{k}": v for k, v in _state().items()},
            "message_hub": {"log_scalars": {"loss": MMHistoryBuffer([1.0, 0.5], [1, 1])}},
        },
        path,
    )
    assert list(detection_mmdet.read_mmdet_weights(path)) == ["weight", "bias"]


def test_legit_files_of_every_format_load(tmp_path):
    from safetensors.torch import save_file

    state = _state()
    torch.save(state, tmp_path / "zip.pt")
    torch.save(state, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    torch.save({"model": {f"_orig_mod.{k}": v for k, v in state.items()}, "epoch": 3}, tmp_path / "wrapped.pth")
    save_file(dict(state), tmp_path / "w.safetensors")
    shutil.copy(tmp_path / "w.safetensors", tmp_path / "w_no_suffix.bin")  # recognised by content
    for name in ("zip.pt", "legacy.pt", "wrapped.pth", "w.safetensors", "w_no_suffix.bin"):
        got = safe_load.read_state_dict(tmp_path / name, "model.weights")
        assert sorted(got) == ["bias", "weight"] and all(torch.equal(got[k], state[k]) for k in state), name


def test_non_tensor_and_corrupt_files_are_one_line_refusals(tmp_path):
    torch.save({"epoch": 3, "lr": [0.1]}, tmp_path / "no_tensors.pt")
    with pytest.raises(ConfigError, match=r"no_tensors.pt holds no state dict of tensors \(found dict with keys"):
        safe_load.read_state_dict(tmp_path / "no_tensors.pt", "model.weights")
    (tmp_path / "junk.pt").write_bytes(os.urandom(4096))
    with pytest.raises(ConfigError, match=r"junk.pt is not a readable checkpoint \(.*\); accepted: ") as e:
        safe_load.read_state_dict(tmp_path / "junk.pt", "model.weights")
    assert "\n" not in str(e.value)


def _raw(body: bytes) -> bytes:
    return b"\x80\x02" + body + b"."


@pytest.mark.parametrize(
    "body,why",
    [
        # BUILD on an allowed function would set attributes on it (process-wide state)
        (b"ctorch._utils\n_rebuild_tensor_v2\n}X\x04\x00\x00\x00evilK\x01sb", "refusing to fill a function"),
        # SETITEM into a torch.Size built by an allowed call
        (b"ctorch\nSize\n)RK\x00K\x01s", "refusing to fill a Size"),
        # REDUCE on a value that no allow-list named (an OrderedDict instance)
        (b"ccollections\nOrderedDict\n)R)R", "refusing to call OrderedDict"),
    ],
)
def test_opcodes_reach_only_allowed_callables_and_containers(tmp_path, body, why):
    path = tmp_path / "crafted.pt"
    path.write_bytes(_raw(body))
    with pytest.raises(ConfigError, match=why):
        safe_load.read_state_dict(path, "model.weights")
    assert "evil" not in torch._utils._rebuild_tensor_v2.__dict__


def _cifar_root(tmp_path: Path, payload: Path | None) -> Path:
    folder = tmp_path / "cifar" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for f in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        entry = {"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), "labels": [0, 1, 2, 3]}
        if payload is not None and f == "data_batch_1":
            entry["filenames"] = [Payload(payload)]
        with open(folder / f, "wb") as fh:
            pickle.dump(entry, fh, protocol=2)
    return tmp_path / "cifar"


def test_cifar_batch_with_a_payload_is_refused_before_anything_runs(tmp_path):
    marker = tmp_path / "MARK"
    root = _cifar_root(tmp_path, marker)
    with pytest.raises(ConfigError) as e:
        cifar.read_batches(root / "cifar-10-batches-py", ["data_batch_1"], "labels")
    msg = _one_line_refusal(e.value, "dataset.root", root / "cifar-10-batches-py" / "data_batch_1")
    assert msg.endswith("expected a pickled dict of numpy arrays and lists (torchvision's CIFAR python layout)")
    assert not marker.exists()


def _cli(*args: str, entry: str = "ptsbench.run:main") -> subprocess.CompletedProcess:
    """A console entry point (pyproject's [project.scripts]) run as its installed script runs it."""
    module, func = entry.split(":")
    code = f"import sys; from {module} import {func}; sys.argv[0] = 'ptsbench'; sys.exit({func}())"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, env=env, timeout=300
    )


@pytest.mark.slow  # a CLI subprocess (Python + Hydra + torch start-up)
@pytest.mark.parametrize("model,fmt", [("zoo_resnet20", "legacy"), ("zoo_resnet20", "mmengine"), ("resnet18", "plain")])
def test_cli_model_weights_payload_is_a_one_line_refusal(tmp_path, model, fmt):
    marker = tmp_path / "MARK"
    path = write_payload(fmt, tmp_path / f"evil.{fmt}", marker)
    p = _cli(f"model={model}", f"model.weights={path}", "calib.num_samples=8", f"paths.output_dir={tmp_path / 'o'}")
    assert p.returncode == 2 and p.stderr.strip().splitlines() == [
        f"error: model.weights: {path} holds a pickled Python object `{SYSTEM}`, which PTSBench does not run; "
        f"{safe_load.ACCEPTED}"
    ]
    assert not marker.exists() and not (tmp_path / "o" / "records").exists()


@pytest.mark.parametrize("fmt", FORMATS)
def test_run_refuses_payload_weights_of_the_zoo_source_in_every_format(make_cfg, tmp_path, fmt):
    marker = tmp_path / "MARK"
    path = write_payload(fmt, tmp_path / f"evil.{fmt}", marker)
    with pytest.raises(ConfigError, match=f"holds a pickled Python object `{SYSTEM}`"):
        run(make_cfg(f"model.weights={path}", "calib.num_samples=8", "dataset.num_test=50"))
    assert not marker.exists()


@pytest.mark.slow  # a CLI subprocess
def test_cli_convert_ldm_refuses_a_payload_ckpt(tmp_path):
    marker = tmp_path / "MARK"
    path = write_payload("lightning", tmp_path / "model.ckpt", marker)
    (tmp_path / "config.yaml").write_text("model: {params: {}}\n")
    p = _cli("--ckpt", str(path), "--config", str(tmp_path / "config.yaml"), "--out", str(tmp_path / "out"),
             entry="ptsbench.models.ldm_convert:main")  # fmt: skip
    assert p.returncode == 2 and p.stderr.strip().splitlines() == [
        f"ptsbench-convert-ldm: --ckpt: {path} holds a pickled Python object `{SYSTEM}`, which PTSBench does not "
        f"run; {safe_load.ACCEPTED}"
    ]
    assert not marker.exists() and not (tmp_path / "out").exists()


@pytest.mark.slow  # a CLI subprocess
def test_cli_cifar_root_with_a_payload_batch_is_a_one_line_refusal(tmp_path):
    marker = tmp_path / "MARK"
    root = _cifar_root(tmp_path, marker)
    p = _cli(
        "model=cifar_resnet32",
        "model.weights=none",
        "dataset=cifar10",
        f"dataset.root={root}",
        "calib.num_samples=4",
        f"paths.output_dir={tmp_path / 'o'}",
    )
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1, p.stderr[-2000:]
    assert lines[0].startswith(f"error: dataset.root: {root / 'cifar-10-batches-py' / 'data_batch_1'} holds")
    assert f"`{SYSTEM}`" in lines[0] and not marker.exists()


class _Scripted(torch.nn.Module):
    """A scripted module with its own ``__setstate__`` (TorchScript code in the archive) that changes a buffer."""

    def __init__(self):
        super().__init__()
        self.register_buffer("seen", torch.zeros(2))
        self.register_buffer("kept", torch.arange(3.0))

    def forward(self, x):
        return x + self.seen.sum()

    @torch.jit.export
    def __getstate__(self) -> tuple[torch.Tensor, torch.Tensor, bool]:
        return (self.seen, self.kept, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[torch.Tensor, torch.Tensor, bool]) -> None:
        self.seen = state[0] + 1.0  # what loading with torch.jit.load runs
        self.kept = state[1]
        self.training = state[2]


def test_a_torchscript_archive_gives_its_tensors_and_none_of_its_code_runs(tmp_path, monkeypatch):
    """torch.load dispatches a TorchScript zip to torch.jit.load, which compiles the archive's code and runs
    its __setstate__; PTSBench reads the tensors from data.pkl with the safe unpickler instead."""
    from ptsbench.safe_load import read_state_dict

    torch.manual_seed(0)
    plain = torch.jit.script(torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.BatchNorm2d(3)))
    path = tmp_path / "scripted.pt"
    torch.jit.save(plain, str(path))
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: pytest.fail("torch.jit.load was called"))
    state = read_state_dict(path, "model.weights")
    expected = plain.state_dict()
    assert set(state) == set(expected) and all(torch.equal(state[k], expected[k]) for k in expected)
    monkeypatch.undo()

    custom = torch.jit.script(_Scripted())
    torch.jit.save(custom, str(path))
    assert torch.jit.load(str(path)).seen.tolist() == [1.0, 1.0]  # its code runs on load
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: pytest.fail("torch.jit.load was called"))
    # its state is what its own code makes of a tuple: refused, naming the object, nothing run
    with pytest.raises(safe_load.ConfigError, match="_Scripted`, which PTSBench does not run"):
        safe_load.read_checkpoint(path, "model.weights")
