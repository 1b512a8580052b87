"""Typed config schemas: one dataclass per method, next to its code, registered in Hydra's ConfigStore.

A method's dataclass (e.g. ``FCPTSConfig`` in sparsity/allocators/fcpts.py) holds each knob's type,
default, range or choices once. Its registry entry carries it as ``.config``; the option files of
the allocator and reconstruction groups extend it with a defaults entry
(``- /schema/allocator@_here_: fcpts``) and add only their deltas (``init: l2norm``).

Every group (task, model, dataset, allocator, reconstruction, sparsity, calib) also gets a node
holding the union of its options' knobs, all unset (``???``), merged before the option
(``conf/config.yaml``). So a sweep such as ``reconstruction=none,single reconstruction.iters=400``
composes for every option: an option ignores a knob it does not use, the run records it under
``not_applicable`` and it stays out of the config digest. A knob no option knows is still refused
(by Hydra, or by :func:`check_group` naming the valid knobs).

:func:`check_group` is the one validation function per group: unknown keys, types, ranges and
choices, then the option's own cross-knob rules (``Schema.check``), each failure a one-line
ConfigError naming the knob, the value and what is valid.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from typing import Any, Literal

from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

from .errors import ConfigError

UNSET = MISSING  # a knob of another option of the group that nobody set


def knob(
    default: Any = MISSING,
    *,
    ge=None,
    gt=None,
    le=None,
    lt=None,
    choices=None,
    omit_at_default: bool = False,
    key: str | None = None,
    required: bool = False,
) -> Any:
    """A schema field. ``omit_at_default``: a knob added after records existed, left out of the config
    digest while it has its default (which reproduces the old behaviour), so old records keep matching.
    ``key``: the knob's name in the config when it cannot be a Python name (``lambda``).
    ``required``: left unset (``???``) it is an error; any other knob left unset is simply absent."""
    meta = {
        "ge": ge,
        "gt": gt,
        "le": le,
        "lt": lt,
        "choices": choices,
        "omit_at_default": omit_at_default,
        "key": key,
        "required": required,
    }
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass
class Schema:
    """Base of every option schema. ``check`` adds rules that span knobs or need a registry."""

    @classmethod
    def check(cls, node: DictConfig, path: str) -> None:
        """Cross-knob rules of the option (after every knob passed its own type and range check)."""

    @classmethod
    def option_name(cls, node: DictConfig) -> str:
        """The option a run used, when Hydra did not say (``run(cfg)`` called directly)."""
        return str(node.get("name", "?"))


def fields_of(cls: type[Schema]) -> dict[str, dataclasses.Field]:
    """The schema's knobs by their name in the config."""
    return {f.metadata.get("key") or f.name: f for f in dataclasses.fields(cls)}


# group -> (key in the node that selects the option's schema, the registry-like lookup: key -> schema)
_GROUPS: dict[str, tuple[str | None, Callable[[], dict[str, type[Schema]]]]] = {}


def register_group(group: str, selector: str | None, schemas: Callable[[], dict[str, type[Schema]]]) -> None:
    """``selector``: the knob naming the option's schema (``name``, ``source``), None for a single schema."""
    _GROUPS[group] = (selector, schemas)


def groups() -> list[str]:
    return list(_GROUPS)


def option_schemas(group: str) -> dict[str, type[Schema]]:
    return _GROUPS[group][1]()


def group_knobs(group: str) -> list[str]:
    """Every knob some option of ``group`` knows (the union the group's node carries)."""
    seen: dict[str, None] = {}
    for cls in option_schemas(group).values():
        seen.update(dict.fromkeys(fields_of(cls)))
    return list(seen)


def defaults_of(cls: type[Schema]) -> dict[str, Any]:
    out = {}
    for name, f in fields_of(cls).items():
        if f.default is not dataclasses.MISSING:
            out[name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[name] = f.default_factory()
        else:
            out[name] = MISSING
    return out


def schema_for(group: str, node: DictConfig) -> type[Schema]:
    selector, lookup = _GROUPS[group]
    schemas = lookup()
    if selector is None:
        return next(iter(schemas.values()))
    key = node.get(selector) if selector in node and not OmegaConf.is_missing(node, selector) else None
    if key is None and len(schemas) == 1:
        return next(iter(schemas.values()))
    if key not in schemas:
        knob_path = group if selector == "name" else f"{group}.{selector}"
        raise ConfigError(f"unknown {knob_path} '{key}'; valid choices: {', '.join(sorted(schemas))}")
    return schemas[key]


# ---------------------------------------------------------------------------------------- values
def _describe(tp) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if origin is Literal:
        return "one of " + ", ".join(map(str, args))
    if origin in (list, tuple):
        return f"a list of {_describe(args[0]).replace('an ', '').replace('a ', '')}s" if args else "a list"
    if origin is dict:
        return "a mapping"
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _describe(a) for a in args)
    return getattr(tp, "__name__", str(tp))


def _fits(value, tp) -> bool:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return True
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if origin in (list, tuple):
        return isinstance(value, (list, tuple, ListConfig)) and (not args or all(_fits(v, args[0]) for v in value))
    if origin is dict:
        return isinstance(value, (dict, DictConfig))
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    return isinstance(value, tp)


def _show(value) -> str:
    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value)
    return repr(value)


def check_value(path: str, value, tp, meta: dict) -> None:
    """One knob: its type, then its range or choices; the error names the knob, the value and what is valid."""
    choices = meta.get("choices")
    if choices is not None:
        if value not in choices or isinstance(value, bool) != any(isinstance(c, bool) for c in choices if c == value):
            raise ConfigError(f"{path}={_show(value)}; valid choices: {', '.join(map(str, choices))}")
        return
    if not _fits(value, tp):
        hint = ""
        if typing.get_origin(tp) in (list, tuple) and isinstance(value, str):
            hint = f" (a single entry is written {path}=[{value}])"
        raise ConfigError(f"{path}={_show(value)} must be {_describe(tp)}{hint}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        for key, ok, word in (
            ("ge", lambda v, b: v >= b, ">="),
            ("gt", lambda v, b: v > b, ">"),
            ("le", lambda v, b: v <= b, "<="),
            ("lt", lambda v, b: v < b, "<"),
        ):
            bound = meta.get(key)
            if bound is not None and not ok(value, bound):
                kind = "an integer" if tp is int else "a number"
                words = [
                    str(a)
                    for arg in typing.get_args(tp)
                    if typing.get_origin(arg) is Literal
                    for a in typing.get_args(arg)
                ]  # e.g. bandwidth: silverman or a number > 0
                raise ConfigError(f"{path}={_show(value)} must be {' or '.join([*words, kind])} {word} {bound}")


# ---------------------------------------------------------------------------------------- groups
def split_node(group: str, node: DictConfig) -> tuple[type[Schema], dict, dict]:
    """(schema, the option's own knobs, knobs of other options that were set) for a group node."""
    cls = schema_for(group, node)
    own_names = set(fields_of(cls))
    union = set(group_knobs(group))
    values = OmegaConf.to_container(node, resolve=True)
    own, foreign = {}, {}
    for key in map(str, node):
        if key in own_names:
            own[key] = values[key]
        elif OmegaConf.is_missing(node, key):
            continue  # another option's knob, unset
        elif key in union:
            foreign[key] = values[key]
        else:
            raise unknown_knob(group, key)
    return cls, own, foreign


def unknown_knob(group: str, key: str) -> ConfigError:
    return ConfigError(
        f"{group}.{key} is not a knob of any {group} option; valid knobs: {', '.join(sorted(group_knobs(group)))}"
    )


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
        if group in _GROUPS and rest and rest.split(".")[0] not in group_knobs(group):
            raise unknown_knob(group, rest.split(".")[0])


def check_group_options(group: str, value: str) -> None:
    """``group=a,b``: every option is a runnable config file of that group (private ``_*`` files are schema
    parts, not options), so a typo or ``reconstruction=_unitwise`` is one line naming the valid choices."""
    from . import config_dir

    folder = config_dir() / group
    if "." in group or "/" in group or not folder.is_dir() or "(" in value:
        return  # a knob, a hydra/* group, or a sweep function such as range(...): Hydra parses those
    valid = sorted(p.stem for p in folder.glob("*.yaml") if not p.stem.startswith("_"))
    for option in value.split(","):
        if option not in valid and option != "null":
            raise ConfigError(f"{group}={option}: no such {group} option; valid choices: {', '.join(valid)}")


def check_params(path: str, cls: type[Schema], params) -> dict:
    """``params`` (a mapping of knobs set) checked against ``cls``; returns them over the schema's defaults."""
    hints = typing.get_type_hints(cls)
    fields = fields_of(cls)
    unknown = sorted(str(k) for k in params if str(k) not in fields)
    if unknown:
        raise ConfigError(
            f"{path}.{unknown[0]} is not a knob of {path} '{cls.option_name(OmegaConf.create(dict(params)))}'"
            f"; valid knobs: {', '.join(sorted(fields))}"
        )
    full = {**defaults_of(cls), **params}
    for name, f in fields.items():
        if full[name] is MISSING or (isinstance(full[name], str) and full[name] == "???"):
            continue  # required-but-unset knobs are reported by the pipeline with their own hint
        check_value(f"{path}.{name}", full[name], hints[f.name], dict(f.metadata))
    cls.check(OmegaConf.create(full), path)
    return full


def check_group(group: str, node: DictConfig) -> dict:
    """Validate one group's node; returns the knobs set for other options (not applicable to this one)."""
    cls, own, foreign = split_node(group, node)
    check_params(group, cls, own)
    return {f"{group}.{k}": v for k, v in foreign.items()}


def without_foreign(cfg: DictConfig) -> tuple[DictConfig, dict]:
    """A copy of ``cfg`` keeping only each group's own knobs, and the knobs it dropped that were set."""
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    dropped: dict[str, Any] = {}
    for group in groups():
        node = cfg.get(group)
        if not isinstance(node, DictConfig):
            continue
        cls, own, foreign = split_node(group, node)
        fields = fields_of(cls)
        for key in [str(k) for k in node]:
            if key in own and not (OmegaConf.is_missing(node, key) and not fields[key].metadata.get("required")):
                continue
            if key in foreign:
                dropped[f"{group}.{key}"] = foreign[key]
            del node[key]
    return cfg, dropped


def digest_view(cfg_dict: dict) -> dict:
    """The config as it enters the digest: knobs marked ``omit_at_default`` left out while at their default."""
    out = dict(cfg_dict)
    for group in ("model", "dataset"):  # `tasks:` only declares what an option serves (checked, never computed with)
        if isinstance(out.get(group), dict) and "tasks" in out[group]:
            out[group] = {k: v for k, v in out[group].items() if k != "tasks"}
    for group in groups():
        node = out.get(group)
        if not isinstance(node, dict):
            continue
        try:
            cls = schema_for(group, OmegaConf.create(node))
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


def union_node(group: str) -> dict:
    return {k: UNSET for k in group_knobs(group)}


def store_in_hydra(options: dict[str, dict[str, type[Schema]]]) -> None:
    """Register the schemas in Hydra's ConfigStore: ``ptsbench_schemas`` (conf/config.yaml's first default)
    holds every group's union of knobs, unset, and the single-schema nodes (prune, eval) with their
    defaults; ``schema/<group>: <key>`` holds the option schemas that option files extend.

    The nodes are plain mappings of the dataclass defaults: the types are enforced by
    :func:`check_group` (one-line errors, exit 2) rather than by OmegaConf at composition
    (multi-line errors, and ints turned into floats, which would change the digests of existing runs)."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    root = {}
    for group, (selector, _) in _GROUPS.items():
        schemas = option_schemas(group)
        root[group] = (
            union_node(group) if selector is not None or group in options else defaults_of(next(iter(schemas.values())))
        )
    cs.store(name="ptsbench_schemas", node=root)
    for group, by_key in options.items():
        for key, cls in by_key.items():
            cs.store(group=f"schema/{group}", name=key, node=defaults_of(cls))
