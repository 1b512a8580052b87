"""Typed knobs: one frozen dataclass per method, next to its code, holding each knob's type, default,
range or choices once.

A method's schema (e.g. ``FCPTSConfig`` in sparsity/allocators/fcpts.py) is registered with the
method (``ALLOCATORS.register("fcpts", config=FCPTSConfig)``); ``ptsbench.config`` puts it in Hydra's
ConfigStore, and the option files extend it with their deltas only (``init: l2norm``).
:func:`build` checks a mapping of knobs against a schema — unknown keys, types, ranges, choices, then
the schema's own cross-knob rules (``Schema.check``), each failure a one-line ConfigError naming the
knob, the value and what is valid — and returns the typed, frozen instance the code below the entry
point receives. Nothing else reads a raw config or repeats a default.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar

from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

from .errors import ConfigError

UNSET = MISSING  # a knob of another option of the group that nobody set
S = TypeVar("S", bound="Schema")


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


@dataclasses.dataclass(frozen=True)
class Schema:
    """Base of every option schema. ``check`` adds the rules that span knobs."""

    def check(self, path: str) -> None:
        """Cross-knob rules of the option (after every knob passed its own type and range check)."""

    @classmethod
    def option_name(cls, values: Mapping[str, Any]) -> str:
        """The option a run used, when Hydra did not say (``run(cfg)`` called directly)."""
        return str(values.get("name", "?"))

    def as_dict(self) -> dict[str, Any]:
        """The knobs by their config names (``lambda``, not ``lambda_``)."""
        return {name: getattr(self, f.name) for name, f in fields_of(type(self)).items()}


def fields_of(cls: type[Schema]) -> dict[str, dataclasses.Field]:
    """The schema's knobs by their name in the config."""
    return {f.metadata.get("key") or f.name: f for f in dataclasses.fields(cls)}


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
        _check_range(path, value, tp, meta)


BOUND_WORDS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
BOUND_TESTS = {">=": lambda v, b: v >= b, ">": lambda v, b: v > b, "<=": lambda v, b: v <= b, "<": lambda v, b: v < b}


def _range_text(meta: dict) -> str:
    """The knob's interval, e.g. ``(0, 10]``; "" without two bounds (the one bound is named on its own)."""
    low = ("[", meta["ge"]) if meta.get("ge") is not None else ("(", meta.get("gt"))
    high = ("]", meta["le"]) if meta.get("le") is not None else (")", meta.get("lt"))
    if low[1] is None or high[1] is None:
        return ""
    return f"{low[0]}{low[1]:g}, {high[1]:g}{high[0]}"


def _check_range(path: str, value: float, tp, meta: dict) -> None:
    """A number knob: finite (inf and nan pass no range check honestly), then within its bounds; the error
    names the knob, the value and the bound it broke (with the whole interval when there are two)."""
    words = [
        str(a) for arg in typing.get_args(tp) if typing.get_origin(arg) is Literal for a in typing.get_args(arg)
    ]  # e.g. bandwidth: silverman or a number > 0
    kind = " or ".join([*words, "an integer" if tp is int else "a number"])
    interval = _range_text(meta)
    broken = [(word, meta[key]) for key, word in BOUND_WORDS.items() if meta.get(key) is not None]
    if not math.isfinite(value):
        where = f" in {interval}" if interval else "".join(f" {w} {b}" for w, b in broken)
        raise ConfigError(f"{path}={_show(value)} must be {kind.replace('a number', 'a finite number')}{where}")
    for word, bound in broken:
        if not BOUND_TESTS[word](value, bound):
            raise ConfigError(
                f"{path}={_show(value)} must be {kind} {word} {bound}"
                + (f"; valid range {interval}" if interval else "")
            )


def check_params(path: str, cls: type[Schema], params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` (a mapping of knobs set) checked against ``cls``; returns them over the schema's
    defaults (unset required knobs stay ``???``: the caller reports them with its own hint)."""
    hints = typing.get_type_hints(cls)
    fields = fields_of(cls)
    unknown = sorted(str(k) for k in params if str(k) not in fields)
    if unknown:
        raise ConfigError(
            f"{path}.{unknown[0]} is not a knob of {path} '{cls.option_name(dict(params))}'"
            f"; valid knobs: {', '.join(sorted(fields))}"
        )
    full = {**defaults_of(cls), **params}
    for name, f in fields.items():
        if full[name] is MISSING or (isinstance(full[name], str) and full[name] == "???"):
            continue
        check_value(f"{path}.{name}", full[name], hints[f.name], dict(f.metadata))
    return full


def build(path: str, cls: type[S], params: Mapping[str, Any]) -> S:
    """The typed, frozen ``cls`` instance of ``params`` (checked by :func:`check_params`, then by the
    schema's cross-knob ``check``). A knob left unset without a default is None."""
    full = check_params(path, cls, params)
    values = {f.name: (None if full[k] is MISSING else _plain(full[k])) for k, f in fields_of(cls).items()}
    instance = cls(**values)
    instance.check(path)
    return instance


def _plain(value):
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value


def typed(path: str, cls: type[S], values: Schema | Mapping[str, Any]) -> S:
    """``values`` as the typed ``cls`` config: a typed config is returned as it is; a mapping (a composed
    group node, a dict) is checked and built, its unset knobs (``???``) left out. Public builders accept
    either, so a caller outside the pipeline can pass plain knobs."""
    if isinstance(values, Schema):
        return values  # type: ignore[return-value]
    plain = _plain(values) if isinstance(values, DictConfig) else dict(values)
    return build(path, cls, {k: v for k, v in plain.items() if not (isinstance(v, str) and v == "???")})
