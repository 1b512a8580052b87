"""The default of every knob a run used, read from the schemas of the options it picked.

Two uses: matching treats a knob at its schema default like an absent one (a record written before
a knob existed and one written after, at its default, are the same run), and a table's "held
fixed" footnote names only the knobs that differ from their defaults — the schema's or the option
file's (``num_test: 1000`` in ``conf/dataset/mnist5k.yaml``) — so a reader sees what is special
about a setting (the full list goes to the CSV). The knob that picks a group's option
(``allocator.name``, ``sparsity.pattern``) always tells runs apart; for the footnote it is at its
default when it names the option the root config (``conf/config.yaml``) picks. Values are
compared as JSON, so 1 and 1.0 are equal.
"""

from __future__ import annotations

import json
from functools import lru_cache

import yaml
from omegaconf import MISSING

from .. import config_dir
from ..config.groups import GROUPS, schema_for
from ..errors import ConfigError
from ..schemas import defaults_of


@lru_cache(maxsize=2048)
def _group_defaults(group: str, node_json: str) -> tuple[tuple[str, object], ...]:
    node = json.loads(node_json)
    try:
        cls = schema_for(group, node)
    except (ConfigError, KeyError, ValueError):
        return ()
    picks = GROUPS[group].selector
    return tuple((f"{group}.{k}", v) for k, v in defaults_of(cls).items() if v is not MISSING and k != picks)


def knob_defaults(cfg: dict) -> dict[str, object]:
    """Dotted knob -> default, for every knob of the options the resolved ``cfg`` picked (the knobs
    that pick an option have none: they always count)."""
    out: dict[str, object] = {}
    for group in GROUPS:
        node = cfg.get(group)
        if isinstance(node, dict):
            out.update(_group_defaults(group, json.dumps(node, sort_keys=True, default=str)))
    return out


def _flat(node: dict, prefix: str) -> dict[str, str]:
    out = {}
    for k, v in node.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        elif not (isinstance(v, str) and v.startswith("${")):  # an interpolation is no default value
            out[f"{prefix}{k}"] = json.dumps(v, sort_keys=True, default=str)
    return out


@lru_cache(maxsize=512)
def _option_file(group: str, option: str) -> dict[str, str]:
    path = config_dir() / group / f"{option}.yaml"
    node = yaml.safe_load(path.read_text()) if path.is_file() else None
    return _flat({k: v for k, v in node.items() if k != "defaults"}, f"{group}.") if isinstance(node, dict) else {}


def option_file_defaults(choices: dict) -> dict[str, str]:
    """Dotted knob -> JSON value that the picked option files set (``conf/dataset/mnist5k.yaml``:
    ``dataset.num_test=1000``): what a user gets by choosing the option without overrides. For the
    footnote only; matching reads the resolved config, never the file an option came from."""
    out: dict[str, str] = {}
    for group, option in sorted((choices or {}).items()):
        if isinstance(option, str) and "/" not in group and "/" not in option:
            out.update(_option_file(group, option))
    return out


@lru_cache(maxsize=1)
def _default_options() -> dict[str, str]:
    """Group -> the option the root config picks (``allocator: uniform``)."""
    root = yaml.safe_load((config_dir() / "config.yaml").read_text()) or {}
    out = {}
    for entry in root.get("defaults", []):
        if isinstance(entry, dict):
            out.update({str(k): v for k, v in entry.items() if isinstance(v, str) and "/" not in str(k)})
    return out


def default_option(knob: str) -> str | None:
    """For the knob that picks a group's option (``allocator.name``): the root config's option."""
    group, _, key = knob.partition(".")
    if group not in GROUPS or GROUPS[group].selector != key:
        return None
    return _default_options().get(group)


def at_default(value_json: str, default: object) -> bool:
    """Whether a flat knob's JSON value equals ``default``."""
    try:
        return json.loads(value_json) == json.loads(json.dumps(default, default=str))
    except (TypeError, ValueError):
        return False


def non_default(knobs: dict[str, str], defaults: dict[str, object]) -> dict[str, str]:
    """The knobs whose value is not their option's default (a knob without a known default stays)."""
    return {k: v for k, v in knobs.items() if k not in defaults or not at_default(v, defaults[k])}
