"""The config groups and the schemas of their options: the one table (``GROUPS``) that says which
registry serves which group and which knob picks the option.

Every group node carries the union of its options' knobs, all unset (``???``), merged before the
option (``conf/config.yaml``), so a sweep such as ``reconstruction=none,single reconstruction.iters=400``
composes for every option: an option ignores a knob it does not use, the run records it under
``not_applicable`` and it stays out of the config digest. A knob no option knows is refused
(:func:`check_overrides`, :func:`split_node`), naming the valid knobs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from omegaconf import DictConfig, OmegaConf

from .. import config_dir
from ..data.base import DATASETS, CalibConfig
from ..errors import ConfigError
from ..export.run_model import SaveConfig
from ..models import MODEL_SOURCES
from ..reconstruction import RECONSTRUCTORS
from ..registry import Registry
from ..schemas import UNSET, Schema, defaults_of, fields_of
from ..sparsity.allocators import ALLOCATORS
from ..sparsity.layers import PruneConfig
from ..sparsity.mask_phase import PATTERNS
from ..tasks.base import TASKS, EvalConfig


@dataclass(frozen=True)
class Group:
    """A config group: its options' schemas come from ``registry`` (the option named by the knob
    ``selector``) or it has one ``schema``. ``option_files``: conf/<group>/*.yaml extend the schema
    nodes ``schema/<group>/<option>`` that :func:`ptsbench.config.register` stores."""

    name: str
    registry: Registry | None = None
    selector: str | None = None
    schema: type[Schema] | None = None
    option_files: bool = False

    def schemas(self) -> dict[str, type[Schema]]:
        if self.registry is None:
            return {"default": self.schema} if self.schema is not None else {}
        return {e.name: e.config for e in self.registry.entries() if e.config is not None}


GROUPS: dict[str, Group] = {
    g.name: g
    for g in (
        Group("task", TASKS, "name", option_files=True),
        Group("model", MODEL_SOURCES, "source"),
        Group("dataset", DATASETS, "name"),
        Group("allocator", ALLOCATORS, "name", option_files=True),
        Group("reconstruction", RECONSTRUCTORS, "name", option_files=True),
        Group("sparsity", PATTERNS, "pattern", option_files=True),
        Group("calib", schema=CalibConfig, option_files=True),
        Group("prune", schema=PruneConfig),
        Group("eval", schema=EvalConfig),
        Group("save", schema=SaveConfig),
    )
}
RUN_GROUPS = ("task", "model", "dataset", "allocator", "reconstruction", "sparsity", "calib")  # in record names


def group_knobs(group: str) -> list[str]:
    """Every knob some option of ``group`` knows (the union the group's node carries)."""
    seen: dict[str, None] = {}
    for cls in GROUPS[group].schemas().values():
        seen.update(dict.fromkeys(fields_of(cls)))
    return list(seen)


def schema_for(group: str, node: DictConfig | dict) -> type[Schema]:
    """The schema of the option ``node`` describes (its selector knob names it)."""
    spec = GROUPS[group]
    schemas = spec.schemas()
    if spec.selector is None:
        return next(iter(schemas.values()))
    if isinstance(node, DictConfig):
        missing = spec.selector not in node or OmegaConf.is_missing(node, spec.selector)
        key = None if missing else node.get(spec.selector)
    else:
        key = node.get(spec.selector)
    if key is None and len(schemas) == 1:
        return next(iter(schemas.values()))
    if key not in schemas:
        knob_path = group if spec.selector == "name" else f"{group}.{spec.selector}"
        raise ConfigError(f"unknown {knob_path} '{key}'; valid choices: {', '.join(sorted(schemas))}")
    return schemas[key]


def unknown_knob(group: str, key: str) -> ConfigError:
    return ConfigError(
        f"{group}.{key} is not a knob of any {group} option; valid knobs: {', '.join(sorted(group_knobs(group)))}"
    )


def split_node(group: str, node: DictConfig) -> tuple[type[Schema], dict, dict]:
    """(schema, the option's own knobs, knobs of other options that were set) of a group node. An
    optional knob of the option left unset is not among its own (its schema default applies); a
    required one is, as ``???``, for the caller to report with its hint."""
    cls = schema_for(group, node)
    fields = fields_of(cls)
    union = set(group_knobs(group))
    values = cast(dict, OmegaConf.to_container(node, resolve=True))
    own, foreign = {}, {}
    for key in map(str, node):
        missing = OmegaConf.is_missing(node, key)
        if key in fields:
            if not missing or fields[key].metadata.get("required"):
                own[key] = values[key]
        elif missing:
            continue  # another option's knob, unset
        elif key in union:
            foreign[key] = values[key]
        else:
            raise unknown_knob(group, key)
    return cls, own, foreign


def check_overrides(overrides: list[str], options: bool = True) -> None:
    """Refuse ``group.knob=value`` overrides whose knob no option of the group knows, naming the valid ones
    (Hydra alone would say only "Key 'iterz' is not in struct"), and, with ``options``, ``group=option``
    overrides naming no runnable option. Pass ``options=False`` when other config trees are searched
    (``hydra.searchpath``, ``--config-dir``): their options are not ours to list."""
    options = options and not any("searchpath" in o for o in overrides)
    for text in overrides:
        head = text.split("=", 1)[0]
        if "=" not in text or head.startswith(("+", "~", "hydra.")):
            continue
        if options:
            check_group_options(head, text.split("=", 1)[1])
        group, _, rest = head.partition(".")
        if group in GROUPS and rest and rest.split(".")[0] not in group_knobs(group):
            raise unknown_knob(group, rest.split(".")[0])


def check_group_options(group: str, value: str) -> None:
    """``group=a,b``: every option is a runnable config file of that group (private ``_*`` files are schema
    parts, not options), so a typo is one line naming the valid choices."""
    folder = config_dir() / group
    if "." in group or "/" in group or not folder.is_dir() or "(" in value:
        return  # a knob, a hydra/* group, or a sweep function such as range(...): Hydra parses those
    valid = sorted(p.stem for p in folder.glob("*.yaml") if not p.stem.startswith("_"))
    for option in value.split(","):
        if option not in valid and option != "null":
            raise ConfigError(f"{group}={option}: no such {group} option; valid choices: {', '.join(valid)}")


def union_node(group: str) -> dict:
    return {k: UNSET for k in group_knobs(group)}


def option_nodes(group: str) -> dict[str, dict]:
    """``schema/<group>/<option>`` nodes: the option schema's defaults with the selector set to its name."""
    spec = GROUPS[group]
    out = {}
    for name, cls in spec.schemas().items():
        node = defaults_of(cls)
        if spec.selector is not None:
            node[spec.selector] = name
        out[name] = node
    return out


def root_node() -> dict:
    """``ptsbench_schemas`` (conf/config.yaml's first default): every group's union of knobs, unset, and
    the single-schema groups without option files (prune, eval) with their defaults."""
    return {
        name: union_node(name) if g.selector is not None or g.option_files else defaults_of(g.schema)  # type: ignore[arg-type]
        for name, g in GROUPS.items()
    }


def digest_view(config: dict) -> dict:
    """The config as it enters the digest: knobs marked ``omit_at_default`` left out while at their
    default (they came after records existed; at the default they reproduce the old behaviour)."""
    out = dict(config)
    for group in GROUPS:
        node = out.get(group)
        if not isinstance(node, dict):
            continue
        try:
            cls = schema_for(group, node)
        except ConfigError:
            continue
        defaults = defaults_of(cls)
        omit = [
            k
            for k, f in fields_of(cls).items()
            if f.metadata.get("omit_at_default") and k in node and node[k] == defaults[k]
        ]
        if omit:
            out[group] = {k: v for k, v in node.items() if k not in omit}
            if not out[group]:  # a group added later whose knobs are all at their defaults: not there before
                del out[group]
    return out
