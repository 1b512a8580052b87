"""Resolve a composed config once into a frozen, typed :class:`RunSpec`; below this, nothing reads a raw
``DictConfig`` or repeats a default.

:func:`resolve` runs every check before any data or model is touched, each failure a one-line
ConfigError naming the knob, the value and what is valid:
1. each group's node is split into the picked option's own knobs and the knobs set for its other
   options (recorded as ``not_applicable``, never used), and the own knobs are built into the
   option's schema (types, ranges, choices, cross-knob rules);
2. the checks that need this machine or span groups (``preflight``): task fit, writable output
   folders, the model source's and the dataset's own checks, weight files, embedded split sizes,
   the sparsity pattern against the allocator and reconstruction, the device;
3. the run's identity: its resolved config, group choices, digest (the weight file hashed once) and
   record path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ..data.base import DATASETS, CalibConfig, DatasetConfig
from ..data.file_digest import dataset_digest, packaged_root
from ..errors import ConfigError
from ..export.run_model import SaveConfig
from ..identity import config_digest, record_filename
from ..models import MODEL_SOURCES, ModelConfig, weights_path
from ..models.fingerprint import weights_sha256
from ..reconstruction import ReconstructionConfig
from ..schemas import build, check_value
from ..sparsity.allocators import AllocatorConfig
from ..sparsity.layers import PruneConfig
from ..sparsity.mask_phase import PATTERNS, UnstructuredConfig, check_with, with_pattern_rate
from ..tasks.base import EvalConfig, TaskConfig
from . import preflight
from .groups import GROUPS, RUN_GROUPS, digest_view, schema_for, split_node

REQUIRED_HINTS = {
    "dataset.root": "point it at the {dataset} data on this machine, e.g. dataset.root=/data/{dataset} "
    "(conf/dataset/{dataset}.yaml describes the expected layout)",
    "model.weights": "no library publishes weights for model '{model}'; pass a local checkpoint, "
    "model.weights=/path/to/{model}.pth, or model.weights=none for random weights",
}
LIBRARY_WEIGHTS = ("zoo", "torchvision", "timm")  # named by the config, not by a user's file


@dataclass(frozen=True)
class Paths:
    """``paths.*``, with ``~`` and environment variables expanded once."""

    output_dir: Path
    records_dir: Path
    cache_dir: Path


@dataclass(frozen=True)
class RunIdentity:
    """What names a run: its resolved config (each group's own knobs), the options picked, its digest
    and record path, the content hash of its weights, and the knobs set for options it did not pick."""

    config: dict[str, Any]
    choices: dict[str, str]
    digest: str
    record_path: Path
    weights_sha256: str | None
    not_applicable: dict[str, Any] = field(default_factory=dict)
    # content digests of a file-backed dataset (None for the embedded ones, which the config names):
    # the evaluated split (the dense-cache key) and everything the run reads (the run digest)
    eval_data_sha256: str | None = None
    data_sha256: str | None = None

    @property
    def name(self) -> str:
        return self.record_path.stem


@dataclass(frozen=True)
class RunSpec:
    """One run, resolved: every group's typed knobs, where it writes, and its identity."""

    task: TaskConfig
    model: ModelConfig
    dataset: DatasetConfig
    allocator: AllocatorConfig
    reconstruction: ReconstructionConfig
    sparsity: UnstructuredConfig
    calib: CalibConfig
    prune: PruneConfig
    eval: EvalConfig
    save: SaveConfig
    paths: Paths
    seed: int
    device: str
    skip_finished: bool
    identity: RunIdentity
    overrides: tuple[str, ...] = ()

    @property
    def rate(self) -> float:
        return float(self.sparsity.rate)


def check_pattern_option(sparsity: DictConfig) -> None:
    """``sparsity.pattern=nm`` typed on the unstructured option leaves the N:M knobs unset (``???``): the
    option is the pattern, so say ``sparsity=nm`` instead of guessing n and m for the user."""
    if sparsity.get("pattern") == "nm" and (OmegaConf.is_missing(sparsity, "n") or OmegaConf.is_missing(sparsity, "m")):
        raise ConfigError(
            "sparsity.pattern=nm is not a knob to set: the sparsity option is the pattern; pass sparsity=nm "
            f"(with sparsity.n / sparsity.m); valid choices: sparsity={' | sparsity='.join(PATTERNS.names())}"
        )


def typed_groups(cfg: DictConfig) -> tuple[dict[str, dict], dict[str, Any], dict[str, Any]]:
    """(each group's own knobs as set, the knobs set for options not picked, each group's typed config)."""
    check_pattern_option(cfg.sparsity)
    own, not_applicable = {}, {}
    for group in GROUPS:
        _, own[group], foreign = split_node(group, cfg[group])
        not_applicable.update({f"{group}.{k}": v for k, v in foreign.items()})
    own["sparsity"] = with_pattern_rate(own["sparsity"])  # N:M without a rate: the pattern's
    _check_required(own)
    for knob, kind in (("seed", int), ("device", str), ("skip_finished", bool)):
        check_value(knob, cfg.get(knob), kind, {})
    typed = {group: build(group, schema_for(group, cfg[group]), own[group]) for group in GROUPS}
    return own, not_applicable, typed


def resolve(cfg: DictConfig, overrides: list[str] | None = None) -> RunSpec:
    """The frozen, typed spec of the run ``cfg`` describes (every check passed), or a ConfigError."""
    own, not_applicable, typed = typed_groups(cfg)
    paths = _paths(cfg)
    _check_machine(typed, paths, str(cfg.device))
    return RunSpec(
        **typed,
        paths=paths,
        seed=int(cfg.seed),
        device=str(cfg.device),
        skip_finished=bool(cfg.skip_finished),
        identity=_identity(cfg, own, typed, paths, not_applicable),
        overrides=tuple(overrides or ()),
    )


def identity_of(cfg: DictConfig) -> RunIdentity:
    """The identity the run of ``cfg`` will have (its knobs checked, not this machine): what a sweep's
    plan needs to tell finished runs before they start."""
    own, not_applicable, typed = typed_groups(cfg)
    return _identity(cfg, own, typed, _paths(cfg), not_applicable)


def _identity(cfg: DictConfig, own: dict, typed: dict, paths: Paths, not_applicable: dict) -> RunIdentity:
    config = {**OmegaConf.to_container(cfg, resolve=True), **own}  # type: ignore[dict-item]
    data = data_identity(typed["dataset"], typed["calib"], paths.cache_dir)
    return identify(config, group_choices(cfg), typed["model"], typed["dataset"], paths, not_applicable, data)


def data_identity(dataset: DatasetConfig, calib: CalibConfig, cache_dir: Path | None) -> tuple[str | None, str | None]:
    """(digest of the evaluated split's files, of every file the run reads) of a dataset read from
    ``dataset.root``; (None, None) for an embedded one, whose digests stay as they were. Data that cannot
    be listed (a root not filled yet, a missing annotation file) leaves the digest without it: the data
    phase then refuses the run naming what is missing, and once the files are there the digest includes
    them, so the run is a new one."""
    knobs = {k: v for k, v in dataset.as_dict().items() if v is not None}
    if knobs.get("root") in (None, "", "???"):
        packaged = packaged_root(knobs)  # files an installed package ships (imagenet_samples)
        if packaged is None:
            return None, None
        knobs["root"] = str(packaged)
    try:
        return (
            dataset_digest(knobs, cache_dir=cache_dir),
            dataset_digest(knobs, (calib.num_samples, calib.seed), cache_dir),
        )
    except (OSError, ValueError, KeyError):  # ConfigError is a ValueError
        return None, None


def _paths(cfg: DictConfig) -> Paths:
    return Paths(*(_expanded(cfg.paths.get(k)) for k in ("output_dir", "records_dir", "cache_dir")))


def _expanded(value: Any) -> Path:
    return Path(os.path.expandvars(os.path.expanduser(str(value))))


def _check_required(own: dict[str, dict]) -> None:
    """A required value (``???`` in a config file) left unset is a ConfigError naming the knob."""
    missing = sorted(f"{g}.{k}" for g, knobs in own.items() for k, v in knobs.items() if v == "???")
    if missing:
        names = {"dataset": own["dataset"].get("name", "dataset"), "model": own["model"].get("name", "model")}
        hints = [f"{k} is required: " + REQUIRED_HINTS.get(k, f"pass {k}=<value>").format(**names) for k in missing]
        raise ConfigError("; ".join(hints))


def _check_machine(typed: dict[str, Any], paths: Paths, device: str) -> None:
    """The checks that need this machine or span groups, before any data or model is loaded."""
    model, dataset = typed["model"], typed["dataset"]
    preflight.check_task_fit(typed["task"].name, model, dataset)
    preflight.check_output_dirs(paths)
    source = MODEL_SOURCES.entry(model.source)
    if source.trait("check") is not None:
        source.trait("check")(model)
    if not source.trait("loads_weights", False):  # the weight file is on this machine (never downloaded)
        preflight.check_weights_file(weights_path(model, dataset.name))
    preflight.check_split(dataset, model, typed["calib"])
    check_data = DATASETS.trait(dataset.name, "check")
    root = getattr(dataset, "root", None)
    if check_data is not None:  # real datasets check root and its layout, and say what they expect
        check_data(dataset)
    elif root is not None and not Path(str(root)).expanduser().exists():
        raise ConfigError(
            f"dataset.root='{root}' does not exist; point it at the {dataset.name} "
            f"data on this machine, e.g. dataset.root=/data/{dataset.name}"
        )
    recon = typed["reconstruction"]
    check_with(typed["sparsity"], typed["allocator"].name, recon.name, getattr(recon, "blocksize", None))
    preflight.check_device(device)


def weights_identity(model: ModelConfig, dataset: str, cache_dir: Path | None) -> tuple[str | None, bool]:
    """(SHA-256 of the weight file or folder, whether it is a user path) or (None, False) for random
    init. The zoo and library weights are named by the config; a user path is not, so only its hash
    enters the run digest (zoo and library runs keep their digests)."""
    weights = str(model.weights)
    if weights in ("none", "None"):
        return None, False
    if MODEL_SOURCES.trait(model.source, "loads_weights", False):
        if weights in LIBRARY_WEIGHTS:
            return None, False  # the source reads its own fixed files
        path: Path | None = Path(weights).expanduser()
    elif weights in LIBRARY_WEIGHTS:
        try:  # recorded, not part of the digest: a plan can name the run before the file exists
            path = weights_path(model, dataset)
        except ConfigError:
            return None, False
    else:
        path = weights_path(model, dataset)
    if path is None or not path.exists():
        return None, False
    return weights_sha256(path, cache_dir), weights not in LIBRARY_WEIGHTS


def identify(
    config: dict[str, Any],
    choices: dict[str, str],
    model: ModelConfig,
    dataset: DatasetConfig,
    paths: Paths,
    not_applicable: dict[str, Any] | None = None,
    data: tuple[str | None, str | None] = (None, None),
) -> RunIdentity:
    """The run's identity from its resolved ``config`` (each group's own knobs) and ``data``, the content
    digests of a file-backed dataset (:func:`data_identity`)."""
    sha, user_weights = weights_identity(model, dataset.name, paths.cache_dir)
    digest = config_digest(digest_view(config), sha if user_weights else None, data[1])
    rate = float(config["sparsity"]["rate"])
    path = paths.records_dir / record_filename(choices, rate, digest)
    return RunIdentity(config, choices, digest, path, sha, dict(not_applicable or {}), *data)


def group_choices(cfg: DictConfig) -> dict[str, str]:
    """The option picked in each group: Hydra's own record of it when Hydra composed this run, else the
    option's schema's guess from the node (``run(cfg)`` called directly, as the tests do)."""
    picked = _hydra_choices()
    out = {}
    for g in RUN_GROUPS:
        node = cfg.get(g)
        if picked.get(g):
            out[g] = str(picked[g])
        elif node is None:
            out[g] = "?"
        else:
            try:
                out[g] = schema_for(g, node).option_name(node)
            except ConfigError:
                out[g] = str(node.get("name", "?"))
    return out


def _hydra_choices() -> dict:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    return dict(HydraConfig.get().runtime.choices)
