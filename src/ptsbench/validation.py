"""Checks of a run's config before any data or model is touched (``validate_config``), and which
option each config group picked (``group_choices``). Bad input is a ConfigError naming the knob
and the valid choices; ``ptsbench.pipeline.run`` calls this first.
"""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from . import preflight, schemas
from .data import DATASETS
from .errors import ConfigError
from .models import MODEL_SOURCES, weights_path
from .sparsity import patterns
from .sparsity.allocators import Allocator, build_allocator

GROUPS = ("task", "model", "dataset", "allocator", "reconstruction", "sparsity", "calib")


def resolve_device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    preflight.check_device(spec)
    return torch.device(spec)


def validate_config(cfg: DictConfig) -> Allocator:
    """Cheap checks of every knob, run before any data or model is touched: one schema check per group
    (types, ranges, choices: ``ptsbench.schemas``), then the checks that need files or span groups.
    Returns the allocator (built from its checked knobs), so a run builds it once."""
    patterns.check_pattern_option(cfg.sparsity)
    cfg, _ = schemas.without_foreign(cfg)
    _check_required_values(cfg)
    for knob, kind in (("seed", int), ("device", str), ("skip_finished", bool)):
        schemas.check_value(knob, cfg.get(knob), kind, {})
    for group in schemas.groups():
        schemas.check_group(group, cfg[group])
    preflight.check_task_fit(cfg)
    preflight.check_output_dirs(cfg)
    model_source = MODEL_SOURCES.get(cfg.model.get("source", "zoo"))
    if getattr(model_source, "check_config", None) is not None:
        model_source.check_config(cfg.model)
    if not getattr(model_source, "loads_weights", False):  # the weight file is on this machine (never downloaded)
        preflight.check_weights_file(weights_path(cfg.model, cfg.dataset.name))
    preflight.check_split(cfg)
    root = cfg.dataset.get("root")
    check_data = getattr(DATASETS.get(cfg.dataset.name), "check_config", None)
    if check_data is not None:  # real datasets check root and its layout, and say what they expect
        check_data(cfg.dataset)
    elif root is not None and not Path(str(root)).expanduser().exists():
        raise ConfigError(
            f"dataset.root='{root}' does not exist; point it at the {cfg.dataset.name} "
            f"data on this machine, e.g. dataset.root=/data/{cfg.dataset.name}"
        )
    patterns.check_config(cfg)  # criterion, group, N:M and their cross-group constraints
    resolve_device(str(cfg.device))
    return build_allocator(
        cfg.allocator.name,
        **{k: v for k, v in OmegaConf.to_container(cfg.allocator, resolve=True).items() if k != "name"},
    )


REQUIRED_HINTS = {
    "dataset.root": "point it at the {dataset} data on this machine, e.g. dataset.root=/data/{dataset} "
    "(conf/dataset/{dataset}.yaml describes the expected layout)",
    "model.weights": "no library publishes weights for model '{model}'; pass a local checkpoint, "
    "model.weights=/path/to/{model}.pth, or model.weights=none for random weights",
}


def _check_required_values(cfg: DictConfig) -> None:
    """A required value (``???`` in a config file) left unset is a ConfigError naming the knob."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        names = {
            "dataset": OmegaConf.select(cfg, "dataset.name", default="dataset"),
            "model": OmegaConf.select(cfg, "model.name", default="model"),
        }
        hints = [f"{k} is required: " + REQUIRED_HINTS.get(k, f"pass {k}=<value>").format(**names) for k in missing]
        raise ConfigError("; ".join(hints))


def group_choices(cfg: DictConfig) -> dict[str, str]:
    """The option picked in each group: Hydra's own record of it when Hydra composed this run, else the
    option's schema's guess from the node (``run(cfg)`` called directly, as the tests do)."""
    picked = _hydra_choices()
    out = {}
    for g in GROUPS:
        node = cfg.get(g)
        if picked.get(g):
            out[g] = str(picked[g])
        elif node is None:
            out[g] = "?"
        else:
            try:
                out[g] = schemas.schema_for(g, node).option_name(node)
            except ConfigError:
                out[g] = str(node.get("name", "?"))
    return out


def _hydra_choices() -> dict:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    return dict(HydraConfig.get().runtime.choices)
