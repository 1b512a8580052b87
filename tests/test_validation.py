"""Every bad input is refused before any work, in one line naming the knob, the value and what is valid:
split and calibration sizes, unchecked knob values, unwritable folders, task/model/dataset mismatches,
devices, checkpoints."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from ptsbench.config.spec import resolve
from ptsbench.errors import ConfigError
from ptsbench.models import zoo, zoo_checkpoint_path
from ptsbench.pipeline import run

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


@pytest.mark.parametrize(
    "overrides, knob",
    [
        (["dataset.split_seed=1"], "dataset.split_seed=1"),
        (["dataset.num_test=4999"], "dataset.num_test=4999"),
        (["dataset.num_test=1001"], "dataset.num_test=1001"),
        (["dataset.num_test=-5"], "dataset.num_test=-5"),
        (["dataset.num_test=100000"], "dataset.num_test=100000"),
        (["dataset.num_test=0"], "dataset.num_test=0"),
        (["calib.num_samples=-5"], "calib.num_samples=-5"),
        (["calib.num_samples=4500"], "calib.num_samples=4500"),
    ],
)
def test_split_and_calibration_knobs_out_of_range_are_refused(make_cfg, overrides, knob):
    with pytest.raises(ConfigError, match=knob.replace(".", r"\.")):
        resolve(make_cfg(*overrides))


def test_zoo_test_split_stays_inside_the_images_the_zoo_never_saw(make_cfg):
    resolve(make_cfg("dataset.num_test=200"))  # a subset of the held-out 1000
    resolve(make_cfg("dataset.split_seed=1", "model.weights=none"))  # other weights: any split


def test_calibration_count_on_a_real_dataset_is_never_negative_and_never_silently_short(caplog):
    from ptsbench.data.base import sample_calibration

    assert len(sample_calibration(10, 10, 0)) == 10
    with pytest.raises(ConfigError, match=r"calib\.num_samples=-5"):
        sample_calibration(10, -5, 0)
    with caplog.at_level(logging.WARNING, logger="ptsbench"):
        assert len(sample_calibration(10, 11, 0)) == 10
    assert "calib.num_samples=11 but the calibration pool has 10 images" in caplog.text


KNOBS = [
    (["allocator=erk", "allocator.power=-1"], "allocator.power"),
    (["sparsity.pattern=nm"], "sparsity.pattern"),
    (["prune.fold_bn=abc"], "prune.fold_bn"),
    (["allocator=fcpts_erk", "allocator.lambda=-1"], "allocator.lambda"),
    (["allocator=erk", "allocator.power=abc"], "allocator.power"),
    (["seed=abc"], "seed"),
    (["eval.batch_size=-1"], "eval.batch_size"),
    (["prune.exclude=fc"], "prune.exclude"),
]


def _refused(make_cfg, overrides) -> str | None:
    try:
        resolve(make_cfg(*overrides))
    except ConfigError as e:
        return str(e)
    except Exception as e:  # noqa: BLE001 - a typed schema refusing the value at composition counts
        if "ValidationError" in type(e).__name__:
            return str(e)
        return None  # an internal error is no refusal
    return None


@pytest.mark.parametrize("overrides, knob", KNOBS, ids=[k for _, k in KNOBS])
def test_unchecked_knob_values_are_refused(make_cfg, overrides, knob):
    msg = _refused(make_cfg, overrides)
    assert msg is not None and knob.split(".")[-1] in msg


@pytest.mark.parametrize("knob", ["paths.records_dir", "paths.cache_dir"])
def test_unwritable_output_folders_are_refused_before_any_work(make_cfg, tmp_path, knob):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ConfigError, match=knob.replace(".", r"\.")):
        resolve(make_cfg(f"{knob}={tmp_path / 'afile' / 'sub'}"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_read_only_records_folder_is_refused(make_cfg, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    with pytest.raises(ConfigError, match="not writable"):
        resolve(make_cfg(f"paths.records_dir={ro / 'records'}"))


@pytest.mark.parametrize(
    "overrides, names",
    [
        (["task=det"], ("task=det", "model=zoo_resnet20")),
        (["model=zoo_retinanet_digits"], ("task=cls", "model=zoo_retinanet_digits")),
        (["task=gen", "model=zoo_ddpm_digits"], ("task=gen", "dataset=mnist5k")),
        (["task=det", "model=zoo_retinanet_digits"], ("task=det", "dataset=mnist5k")),
    ],
)
def test_task_mismatch_is_a_config_error_naming_both(make_cfg, overrides, names):
    with pytest.raises(ConfigError) as e:
        resolve(make_cfg(*overrides))
    assert all(n in str(e.value) for n in names)


def test_every_model_and_dataset_config_declares_its_tasks():
    for group in ("model", "dataset"):
        for p in sorted((ROOT / "conf" / group).glob("*.yaml")):
            tasks = OmegaConf.load(p).get("tasks")
            assert tasks and set(tasks) <= {"cls", "det", "gen"}, p


@pytest.mark.parametrize("device", ["cuda:7", "tpu", "mps", "cuda:x"])
def test_unavailable_or_unknown_device_is_refused(make_cfg, device):
    if device == "cuda:7" and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    with pytest.raises(ConfigError, match=f"device={device}"):
        resolve(make_cfg(f"device={device}"))


def test_corrupt_checkpoint_is_a_config_error_naming_the_file(make_cfg, tmp_path):
    (tmp_path / "junk.pt").write_bytes(os.urandom(4096))
    with pytest.raises(ConfigError, match="junk.pt is not a readable checkpoint"):
        run(make_cfg(*TINY, f"model.weights={tmp_path / 'junk.pt'}"))


def test_checkpoint_path_that_is_a_folder_is_refused_at_validation(make_cfg, tmp_path):
    with pytest.raises(ConfigError, match="is a folder"):
        resolve(make_cfg(f"model.weights={tmp_path}"))


def test_corrupt_dense_cache_is_named_and_recomputed(make_cfg, tmp_path, caplog):
    first = run(make_cfg(*TINY, "sparsity.rate=0.5"))
    (cache,) = (tmp_path / "out" / "cache" / "dense").glob("*.json")
    cache.write_text("{truncated")
    with caplog.at_level(logging.WARNING, logger="ptsbench"):
        again = run(make_cfg(*TINY, "sparsity.rate=0.5", "skip_finished=false"))
    assert cache.name in caplog.text and again["dense"] == first["dense"]
    assert json.loads(cache.read_text()) == {**first["dense"], "has_outputs": True}  # logits beside it


def test_unitwise_base_config_is_not_runnable():
    from ptsbench.config.groups import check_overrides

    # the CLI checks group options before Hydra composes (Hydra's own miss is a multi-line traceback)
    with pytest.raises(
        ConfigError,
        match=r"reconstruction=_unitwise: no such reconstruction option; valid choices: "
        r"block, layer, none, single, sparsegpt",
    ):
        check_overrides(["model=zoo_resnet20", "reconstruction=single,_unitwise"])
    with pytest.raises(
        ConfigError, match=r"allocator=ekr: no such allocator option; valid choices: alphapruning, erk, "
    ):
        check_overrides(["allocator=ekr"])
    check_overrides(["reconstruction=single,block", "experiment=null", "+case=embedded_cls", "hydra/launcher=parallel"])
    check_overrides(["reconstruction=mine"], options=False)  # --config-dir / hydra.searchpath: other trees
