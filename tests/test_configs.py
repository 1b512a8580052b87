"""Every config file under conf/ composes and passes validate_config, without data or downloads.

Each group option is composed with a model/dataset/task it belongs with; each experiment with
every value of its sweep (one factor at a time); each case as shipped. Real datasets and
checkpoints are stand-ins in a temporary tree (``DATA_ROOT``/``WEIGHTS_ROOT``, which the cases
read): empty files in the layout each dataset's check expects. A model whose default weights
live in the torchvision/timm cache or must be passed (``???``) first fails with a ConfigError
naming ``model.weights``, then passes with a stand-in checkpoint.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict

import ptsbench.run  # noqa: F401 - registers the resolver conf/hydra/launcher/parallel.yaml uses
from ptsbench.config.spec import resolve
from ptsbench.errors import ConfigError

CONF = Path(__file__).resolve().parents[1] / "conf"
SWEPT_ELSEWHERE = {"hydra", "experiment", "case"}  # composed by their own tests below


def options(group: str) -> list[str]:
    """The public options of a group (``_name.yaml`` files are building blocks, not choices)."""
    return sorted(p.stem for p in (CONF / group).glob("*.yaml") if not p.stem.startswith("_"))


GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name not in SWEPT_ELSEWHERE and p.name[0] != "_")
GROUP_OPTIONS = [(g, o) for g in GROUPS for o in options(g)]
OPTIONAL_EXTRAS = ("model.source=mmdet needs OpenMMLab",)
REAL_DATASETS = ("imagenet", "cifar10", "cifar100", "coco2017", "voc07", "lsun_churches", "lsun_bedroom")


def make_stand_ins(root: Path) -> tuple[Path, Path]:
    """Empty files laid out as each real dataset and checkpoint is expected on disk."""
    data, weights = root / "data", root / "weights"
    for d in (
        "imagenet/train/n01440764",
        "imagenet/val/n01440764",
        "coco2017",
        "voc07/VOC2007/Annotations",
        "lsun_churches",
        "lsun_bedroom",
        "cifar10/cifar-10-batches-py",
        "cifar100/cifar-100-python",
    ):
        (data / d).mkdir(parents=True)
    for f in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (data / "cifar10" / "cifar-10-batches-py" / f).touch()
    for f in ("train", "test"):
        (data / "cifar100" / "cifar-100-python" / f).touch()
    weights.mkdir()
    for case in options("case"):
        (weights / f"{case}.pth").touch()
        (weights / case).mkdir()
        (weights / case / "model_index.json").write_text("{}")
    (weights / "pt_inception-2015-12-05-6726825d.pth").touch()
    return data, weights


@pytest.fixture
def stand_ins(tmp_path, monkeypatch):
    data, weights = make_stand_ins(tmp_path)
    monkeypatch.setenv("DATA_ROOT", str(data))
    monkeypatch.setenv("WEIGHTS_ROOT", str(weights))
    return tmp_path, data, weights


def compose_cfg(overrides: list[str], out: Path, hydra_cfg: bool = False):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(
            config_name="config", overrides=[f"paths.output_dir={out}", *overrides], return_hydra_config=hydra_cfg
        )


def model_pairing(model: str, data: Path) -> list[str]:
    """The task and dataset a model option serves (its published weights' dataset, or the zoo's)."""
    raw = OmegaConf.load(CONF / "model" / f"{model}.yaml")
    source = str(raw.get("source"))
    task = {"torchvision_det": "det", "mmdet": "det", "diffusers": "gen"}.get(source, "cls")
    dataset = raw.get("trained_on") or {
        "diffusers": "mnist5k_gen" if raw.get("weights") == "zoo" else "lsun_churches",
    }.get(source, "mnist5k")
    return [f"task={task}", f"dataset={dataset}", *dataset_root(str(dataset), data)]


def dataset_root(dataset: str, data: Path) -> list[str]:
    return [f"dataset.root={data / dataset}"] if dataset in REAL_DATASETS else []


def stand_in_weights(cfg, weights: Path) -> str:
    return str(weights / ("lsun_churches_ldm" if cfg.model.source == "diffusers" else "cifar10_resnet32.pth"))


def validate_as_shipped_then_with_weights(overrides: list[str], out: Path, weights: Path, cfg=None) -> None:
    """Valid as shipped, or refused only for want of a local checkpoint (named), then valid with one."""
    cfg = cfg if cfg is not None else compose_cfg(overrides, out)
    try:
        resolve(cfg)
        return
    except ConfigError as e:
        if str(e).startswith(OPTIONAL_EXTRAS):  # an extra this machine lacks is named, with its install command
            return
        assert str(e).startswith("model.weights"), f"{overrides}: {e}"
    with open_dict(cfg):
        cfg.model.weights = stand_in_weights(cfg, weights)
        if cfg.task.name == "gen" and cfg.model.source == "diffusers":
            cfg.task.inception_weights = str(weights / "pt_inception-2015-12-05-6726825d.pth")
    resolve(cfg)


@pytest.mark.parametrize("group,option", GROUP_OPTIONS, ids=[f"{g}={o}" for g, o in GROUP_OPTIONS])
def test_every_group_option_composes_and_validates(stand_ins, group, option):
    tmp, data, weights = stand_ins
    overrides = [f"{group}={option}"]
    if group == "model":
        overrides += model_pairing(option, data)
    elif group == "dataset":
        overrides += dataset_root(option, data)
        for model in options("model"):  # the dataset with a model that serves it
            if model_pairing(model, data)[1] == f"dataset={option}":
                overrides = [f"model={model}", *model_pairing(model, data)]
                break
        else:  # no published weights were trained on it (LSUN bedroom): a model of the task it serves
            task = str(OmegaConf.load(CONF / "dataset" / f"{option}.yaml").tasks[0])
            model = {"cls": "resnet18", "det": "retinanet_r18", "gen": "ldm"}[task]
            overrides += [f"task={task}", f"model={model}"]
    elif group == "task":
        overrides += {
            "cls": [],
            "det": model_pairing("zoo_retinanet_digits", data) + ["model=zoo_retinanet_digits"],
            "gen": model_pairing("zoo_ddpm_digits", data) + ["model=zoo_ddpm_digits"],
        }.get(option, [])
    validate_as_shipped_then_with_weights(overrides, tmp / "out", weights)


@pytest.mark.parametrize("case", options("case"))
def test_every_case_validates_with_its_data_and_weights_in_place(stand_ins, case):
    tmp, data, weights = stand_ins
    cfg = compose_cfg([f"+case={case}"], tmp / "out")
    if not case.startswith("embedded_"):  # the stand-ins need no data; the paper's cases read DATA_ROOT
        assert str(cfg.dataset.root) == str(data / cfg.dataset.name)
    validate_as_shipped_then_with_weights([f"+case={case}"], tmp / "out", weights, cfg)


def sweep_values(raw: str) -> list[str]:
    return [v.strip() for v in str(raw).split(",")]


@pytest.mark.slow  # one composition per value of every swept knob: about 150 compositions
@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_experiment_validates_for_every_value_of_its_sweep(stand_ins, experiment):
    tmp, data, weights = stand_ins
    base = compose_cfg([f"experiment={experiment}"], tmp / "out", hydra_cfg=True)
    params = {k: sweep_values(v) for k, v in (OmegaConf.select(base, "hydra.sweeper.params") or {}).items()}
    first = {k: v[0] for k, v in params.items()}
    jobs = [first] + [{**first, knob: value} for knob, values in params.items() for value in values[1:]]
    assert len(jobs) == 1 + sum(len(v) - 1 for v in params.values())
    for job in jobs:
        overrides = [f"experiment={experiment}", *itertools.starmap("{}={}".format, job.items())]
        validate_as_shipped_then_with_weights(overrides, tmp / "out", weights)


@pytest.mark.parametrize("launcher", options("hydra/launcher"))
def test_every_launcher_composes(tmp_path, launcher):
    cfg = compose_cfg([f"hydra/launcher={launcher}"], tmp_path, hydra_cfg=True)
    resolved = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert resolved["_target_"].startswith("hydra_plugins.")
    if launcher == "parallel":
        assert isinstance(resolved["n_jobs"], int) and resolved["n_jobs"] >= 1


@pytest.mark.parametrize("callbacks", options("hydra/callbacks"))
def test_every_callback_option_instantiates(tmp_path, callbacks):
    cfg = compose_cfg([f"hydra/callbacks={callbacks}"], tmp_path, hydra_cfg=True)
    assert len(cfg.hydra.callbacks) >= 1
    for node in cfg.hydra.callbacks.values():
        assert instantiate(node) is not None


@pytest.mark.parametrize(
    "experiment", sorted(p.stem for p in (Path(__file__).parents[1] / "conf" / "experiment").glob("*.yaml"))
)
def test_a_method_preset_keeps_its_reconstruction_under_every_experiment(make_cfg, experiment):
    """``method`` comes before ``experiment`` in the defaults, so an experiment that picked a reconstruction
    would silently undo the method's (``experiment=table2 method=sparsegpt`` running plain magnitude)."""
    for method, recon in (("sparsegpt", "sparsegpt"), ("magnitude_block", "block")):
        cfg = make_cfg(f"experiment={experiment}", f"method={method}")
        assert cfg.reconstruction.name == recon, f"experiment={experiment} undoes method={method}"
