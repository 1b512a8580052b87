"""Config schemas: one typed schema per method,
every bad knob refused up front in one line, group+knob sweeps that compose, records that name
the option picked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from ptsbench.config.groups import check_overrides, split_node
from ptsbench.config.spec import group_choices, identity_of, resolve
from ptsbench.errors import ConfigError
from ptsbench.pipeline import run

ROOT = Path(__file__).resolve().parents[1]
CONF = str(ROOT / "conf")
SMALL = ("calib.num_samples=32", "eval.batch_size=1000", "device=cpu")


def compose_cfg(*overrides: str):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def digest_of(cfg) -> str:
    return identity_of(cfg).digest


# --- each unchecked knob fails in validation with knob, value and what is valid
BAD_KNOBS = [
    (("allocator=erk", "allocator.power=-1"), "allocator.power=-1 must be a number > 0; valid range (0, 10]"),
    (("allocator=erk", "allocator.power=abc"), "allocator.power='abc' must be a number"),
    (("sparsity.pattern=blocks",), "unknown sparsity.pattern 'blocks'; valid choices: nm, unstructured"),
    (("prune.fold_bn=abc",), "prune.fold_bn='abc' must be true or false"),
    (
        ("allocator=fcpts_erk", "allocator.lambda=-1"),
        "allocator.lambda=-1 must be a number >= 0; valid range [0, 1e+06]",
    ),
    (("seed=abc",), "seed='abc' must be an integer"),
    (("eval.batch_size=-1",), "eval.batch_size=-1 must be an integer >= 1"),
    (
        ("prune.exclude=fc",),
        "prune.exclude='fc' must be a list of strings (a single entry is written prune.exclude=[fc])",
    ),
    (("calib.num_samples=abc",), "calib.num_samples='abc' must be an integer"),
    (
        ("reconstruction=block", "reconstruction.input=noisy"),
        "reconstruction.input='noisy'; valid choices: sparse, dense",
    ),
    (
        ("reconstruction=block", "reconstruction.lr=-1"),
        "reconstruction.lr=-1 must be a number >= 0; valid range [0, 1e+06]",
    ),
    (
        ("allocator=fcpts_l2norm", "allocator.bandwidth=-2.0"),
        "allocator.bandwidth=-2.0 must be silverman or a number > 0; valid range (0, 1]",
    ),
    (
        ("task=gen", "model=zoo_ddpm_digits", "dataset=mnist5k_gen", "task.steps=0"),
        "task.steps=0 must be an integer >= 1",
    ),
    (("dataset.num_test=abc",), "dataset.num_test='abc' must be an integer"),
    (("sparsity=nm", "sparsity.n=two"), "sparsity.n='two' must be an integer"),
]


@pytest.mark.parametrize("overrides, message", BAD_KNOBS, ids=[" ".join(o) for o, _ in BAD_KNOBS])
def test_bad_knob_is_one_line_naming_knob_value_and_valid(overrides, message):
    with pytest.raises(ConfigError) as err:
        resolve(compose_cfg(*overrides))
    assert str(err.value) == message


def test_bad_knob_through_the_cli_exits_2_before_any_work(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    for args, message in (
        (["allocator=erk", "allocator.power=-1"], "error: allocator.power=-1 must be a number > 0"),
        (
            ["reconstruction.iterz=5"],
            "error: reconstruction.iterz is not a knob of any reconstruction option; valid knobs: amp, batch_size",
        ),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "ptsbench.run", *args, f"paths.output_dir={tmp_path}"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip().splitlines()[-1].startswith(message)
        assert not (tmp_path / "cache").exists()  # refused before the dense evaluation


# --- one source of truth per knob
def test_option_files_are_deltas_on_their_schema():
    fcpts_erk, fcpts_l2 = (compose_cfg(f"allocator={o}").allocator for o in ("fcpts_erk", "fcpts_l2norm"))
    assert fcpts_erk.iters == fcpts_l2.iters == 1600 and fcpts_erk["lambda"] == 1.0  # FCPTSConfig's defaults
    assert (fcpts_erk.init, fcpts_l2.init) == ("erk", "l2norm")
    body = [
        ln
        for ln in (ROOT / "conf/allocator/fcpts_l2norm.yaml").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    assert body == ["defaults:", "  - /schema/allocator@_here_: fcpts", "  - _self_", "init: l2norm"]
    assert compose_cfg("reconstruction=layer").reconstruction.iters == 20000  # UnitwiseConfig's default


def test_unitwise_is_a_schema_not_a_selectable_option():
    assert not (ROOT / "conf/reconstruction/_unitwise.yaml").exists()
    with pytest.raises(Exception, match="_unitwise"):
        compose_cfg("reconstruction=_unitwise")


def test_prune_knobs_are_declared_and_typed():
    cfg = compose_cfg()
    assert OmegaConf.to_container(cfg.prune) == {
        "exclude": [],
        "fold_bn": True,
        "adapter_dense": True,
        "keep_dense": [],
    }
    with pytest.raises(ConfigError, match=r"prune.keep_dense='x\*' must be a list of strings"):
        resolve(compose_cfg("prune.keep_dense=x*"))


def test_digests_of_existing_runs_are_unchanged():
    # digests of these configs before the schemas (and before sparsity.criterion/group existed), b584fd5;
    # FCPTS runs are left out: its method changed (docs/methods.md#decisions dual lambda, new knobs), so its digests did too
    before = {
        (): "ad8d02d40d54",
        ("allocator=erk", "sparsity.rate=0.7"): "ef3625056226",
        ("allocator=l2norm", "reconstruction=block"): "e074628fb66e",
        ("reconstruction=single", "reconstruction.iters=400"): "f49ed79a4f93",
        ("task=det", "model=zoo_retinanet_digits", "dataset=digits_det"): "2c47d798356f",
        ("task=gen", "model=zoo_ddpm_digits", "dataset=mnist5k_gen"): "875e30313735",
    }
    assert {k: digest_of(compose_cfg(*k))[:12] for k in before} == before
    # a knob added later splits the digest only when it moves off its default
    assert digest_of(compose_cfg("sparsity.criterion=wanda"))[:12] != before[()]
    assert digest_of(compose_cfg("prune.adapter_dense=false"))[:12] != before[()]


# --- a group swept with a knob of one of its options
GROUP_KNOB_SWEEPS = [
    ("reconstruction", ["none", "single", "layer", "block", "sparsegpt"], "reconstruction.iters=400"),
    ("allocator", ["uniform", "l2norm", "erk", "fcpts_erk", "fcpts_l2norm"], "allocator.iters=200"),
    ("task", ["cls", "det", "gen"], "task.num_samples=100"),
    ("dataset", ["mnist5k", "digits", "digits_det", "imagenet"], "dataset.root=/data/imagenet"),
    ("model", ["zoo_resnet20", "resnet18", "retinanet_r18"], "model.pretrained=ResNet18_Weights.IMAGENET1K_V1"),
    ("sparsity", ["unstructured", "nm"], "sparsity.n=2"),
]


@pytest.mark.parametrize("group, options, knob", GROUP_KNOB_SWEEPS, ids=[g for g, _, _ in GROUP_KNOB_SWEEPS])
def test_group_swept_with_a_knob_of_one_option_composes_for_every_option(group, options, knob):
    key, value = knob.split("=", 1)
    used_by = []
    for option in options:
        cfg = compose_cfg(f"{group}={option}", knob)
        _, own, dropped = split_node(group, cfg[group])
        name = key.split(".")[1]
        if name in dropped:  # not this option's knob: ignored, recorded, out of the digest
            assert str(dropped[name]) == value and name not in own
            assert digest_of(cfg) == digest_of(compose_cfg(f"{group}={option}"))
        else:
            used_by.append(option)
            assert str(own[name]) == value
    assert used_by and len(used_by) < len(options)


@pytest.mark.slow
def test_sweep_from_the_shell_as_typed(tmp_path):
    """The issue's command, with tiny settings: reconstruction swept with reconstruction.iters."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "ptsbench.run",
            "-m",
            "reconstruction=none,single",
            "reconstruction.iters=2",
            "reconstruction.progress=false",
            "sparsity.rate=0.6",
            *SMALL,
            f"paths.output_dir={tmp_path}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    recs = {
        r["choices"]["reconstruction"]: r
        for r in (json.loads(p.read_text()) for p in (tmp_path / "records").glob("*.json"))
    }
    assert set(recs) == {"none", "single"} and all(r["status"] == "ok" for r in recs.values())
    assert recs["none"]["not_applicable"] == {"reconstruction.iters": 2, "reconstruction.progress": False}
    assert recs["single"]["not_applicable"] == {} and recs["single"]["reconstruction"]["iters"] == 2
    assert "iters" not in recs["none"]["config"]["reconstruction"]


def test_knob_unknown_to_every_option_names_the_valid_ones():
    with pytest.raises(
        ConfigError,
        match=r"^reconstruction.iterz is not a knob of any reconstruction option; "
        r"valid knobs: amp, batch_size, blocksize, .*iters, ",
    ):
        check_overrides(["reconstruction=single,layer", "reconstruction.iterz=5"])
    check_overrides(["reconstruction=single", "reconstruction.iters=5", "+foo=1", "hydra.job.chdir=false"])


# --- records name the option picked
def test_choices_and_file_names_name_the_option(tmp_path):
    recs = [
        run(
            compose_cfg(
                f"allocator={a}", "allocator.iters=2", "sparsity.rate=0.6", *SMALL, f"paths.output_dir={tmp_path}"
            )
        )
        for a in ("fcpts_erk", "fcpts_l2norm")
    ]
    names = sorted(p.name for p in (tmp_path / "records").glob("*.json"))
    assert [n.split("-")[3] for n in names] == ["fcpts_erk", "fcpts_l2norm"]
    for rec, alloc in zip(recs, ("fcpts_erk", "fcpts_l2norm")):
        assert rec["choices"] == {
            "task": "cls",
            "model": "zoo_resnet20",
            "dataset": "mnist5k",
            "allocator": alloc,
            "reconstruction": "none",
            "sparsity": "unstructured",
            "calib": "default",
        }


def test_choices_come_from_hydra_when_it_composed_the_run():
    from hydra.core.hydra_config import HydraConfig

    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        full = compose(config_name="config", overrides=["allocator=fcpts_l2norm"], return_hydra_config=True)
    HydraConfig.instance().set_config(full)
    try:
        cfg = OmegaConf.create({k: v for k, v in OmegaConf.to_container(full).items() if k != "hydra"})
        cfg.allocator.init = "erk"  # the node says otherwise: Hydra's record of the option wins
        assert group_choices(cfg)["allocator"] == "fcpts_l2norm" and group_choices(cfg)["calib"] == "default"
    finally:
        HydraConfig.instance().cfg = None
