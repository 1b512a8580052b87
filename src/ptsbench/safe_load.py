"""Reading the files a user passes (checkpoints, pickled dataset batches) without running code.

Rule: nothing a user passes is unpickled by the real unpickler. A pickle may name any Python
global and ask for it to be called (``os.system("...")`` is two opcodes), and torch's legacy
reader unpickles its first objects with whatever ``pickle_module.load`` it is given. So every
pickle here, in every file format, goes through :class:`SafeUnpickler`: the pure-Python
unpickler of the standard library, whose ``find_class`` never imports anything and which calls,
builds and fills only what an allow-list names:
- torch files (zip and legacy, ``torch.save``): the globals torch's own weights-only unpickler
  allows (tensor rebuild functions, storages, dtypes, ``OrderedDict``, ...). Any other global
  (Lightning hyper-parameters, mmengine ``ConfigDict``/``HistoryBuffer``, numpy scalars in the
  metadata, ``os.system``) becomes an :class:`InertGlobal` placeholder that records its arguments
  and runs nothing, so training checkpoints still yield their tensors;
- plain pickles of arrays (CIFAR batches): numpy's array/dtype/scalar reconstructors only; any
  other global refuses the file.
``.safetensors`` files hold no pickle and are read by the safetensors library. A refusal is one
ConfigError line: the knob, the file, the Python objects it names, and the formats accepted.
"""

from __future__ import annotations

import _compat_pickle
import pickle
import types
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import ConfigError

ACCEPTED = (
    "accepted: a torch.save file of tensors (a state dict, or a training checkpoint holding one: "
    "Lightning/CompVis .ckpt, mmengine .pth), or .safetensors"
)
WRAPPER_KEYS = ("state_dict", "model", "model_state", "module", "net")
PREFIXES = ("module.", "_orig_mod.")  # (Distributed)DataParallel, torch.compile


class InertGlobal:
    """Stands in for a pickled global outside the allow-list; creating or filling it runs nothing."""

    qualname = "?"

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state):
        self.state = state

    def __setitem__(self, key, value):  # pickled dict subclasses fill themselves item by item
        self.__dict__.setdefault("items", {})[key] = value

    def append(self, value):  # list subclasses by append/extend, set subclasses by add
        self.__dict__.setdefault("list", []).append(value)

    def extend(self, values):
        self.__dict__.setdefault("list", []).extend(values)

    add = append

    def __repr__(self) -> str:
        return f"<inert {self.qualname}>"


class RefusedGlobal(pickle.UnpicklingError):
    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


# typeshed describes only the C Unpickler's public API, not the pure-Python one's stack and load_* methods
_PurePythonUnpickler: Any = pickle._Unpickler


class SafeUnpickler(_PurePythonUnpickler):
    """Pure-Python unpickler: globals from ``allowed`` (else an inert placeholder when ``inert``,
    else refused); only allowed callables and placeholders are called; BUILD, SETITEM(S),
    APPEND(S) and ADDITEMS reach only the containers listed in ``buildable`` and placeholders.
    ``seen`` collects the names that became placeholders (shared by the unpicklers of one file)."""

    allowed: dict[str, object] = {}
    buildable: tuple[type, ...] = ()
    inert = True
    seen: set[str]

    def __init__(self, file, **kwargs):
        super().__init__(file, **kwargs)
        self._callable = {id(v) for v in self.allowed.values()}

    def find_class(self, module: str, name: str):
        if self.proto < 3 and self.fix_imports:  # Python 2 names, as the standard unpickler maps them
            module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
            module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        full = f"{module}.{name}"
        if full in self.allowed:
            return self.allowed[full]
        if not self.inert:
            raise RefusedGlobal(full)
        self.seen.add(full)
        return type(name.rpartition(".")[2] or "global", (InertGlobal,), {"qualname": full})

    def _check_call(self, func) -> None:
        if id(func) not in self._callable and not (isinstance(func, type) and issubclass(func, InertGlobal)):
            raise pickle.UnpicklingError(f"refusing to call {type(func).__name__} {func!r:.80}")

    def _check_target(self, obj, kinds: tuple[type, ...]) -> None:
        if not isinstance(obj, (*kinds, InertGlobal)):
            raise pickle.UnpicklingError(f"refusing to fill a {type(obj).__name__}")

    def load_reduce(self):
        self._check_call(self.stack[-2])
        super().load_reduce()

    def load_newobj(self):
        self._check_call(self.stack[-2])
        super().load_newobj()

    def load_newobj_ex(self):
        self._check_call(self.stack[-3])
        super().load_newobj_ex()

    def _instantiate(self, klass, args):  # INST and OBJ
        self._check_call(klass)
        super()._instantiate(klass, args)

    def load_build(self):
        self._check_target(self.stack[-2], self.buildable)
        super().load_build()

    def load_setitem(self):
        self._check_target(self.stack[-3], (dict,))
        super().load_setitem()

    def load_setitems(self):
        self._check_target(self.metastack[-1][-1], (dict,))
        super().load_setitems()

    def load_append(self):
        self._check_target(self.stack[-2], (list,))
        super().load_append()

    def load_appends(self):
        self._check_target(self.metastack[-1][-1], (list,))
        super().load_appends()

    def load_additems(self):
        self._check_target(self.metastack[-1][-1], (set,))
        super().load_additems()

    dispatch: dict[int, Any] = dict(pickle._Unpickler.dispatch)
    for _op, _fn in {
        pickle.REDUCE: load_reduce,
        pickle.NEWOBJ: load_newobj,
        pickle.NEWOBJ_EX: load_newobj_ex,
        pickle.BUILD: load_build,
        pickle.SETITEM: load_setitem,
        pickle.SETITEMS: load_setitems,
        pickle.APPEND: load_append,
        pickle.APPENDS: load_appends,
        pickle.ADDITEMS: load_additems,
    }.items():
        dispatch[_op[0]] = _fn
    del _op, _fn


def _torch_allowed() -> dict[str, object]:
    from torch import _weights_only_unpickler

    return dict(_weights_only_unpickler._get_allowed_globals())


def _numpy_allowed() -> dict[str, object]:
    """numpy's array, dtype and scalar reconstructors (numpy 1 and 2 module names), and bytes."""
    import codecs

    core = np._core if hasattr(np, "_core") else np.core
    allowed: dict[str, object] = {"numpy.ndarray": np.ndarray, "numpy.dtype": np.dtype, "_codecs.encode": codecs.encode}
    for package in ("numpy.core", "numpy._core"):
        allowed[f"{package}.multiarray._reconstruct"] = core.multiarray._reconstruct
        allowed[f"{package}.multiarray.scalar"] = core.multiarray.scalar
        allowed[f"{package}.numeric._frombuffer"] = core.numeric._frombuffer  # protocol 5
    return allowed


def _pickle_module(allowed: dict, buildable: tuple[type, ...], inert: bool, seen: set[str]):
    namespace = {"allowed": allowed, "buildable": buildable, "inert": inert, "seen": seen}
    cls = type("FileUnpickler", (SafeUnpickler,), namespace)

    def load(file, **kwargs):
        return cls(file, **kwargs).load()

    return types.SimpleNamespace(Unpickler=cls, load=load, __name__="ptsbench.safe_load")


def _objects(names: set[str]) -> str:
    shown = ", ".join(f"`{n}`" for n in sorted(names)[:4]) + (" ..." if len(names) > 4 else "")
    return f"pickled Python objects {shown}" if len(names) > 1 else f"a pickled Python object {shown}"


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def _is_safetensors(path: Path) -> bool:
    """By name, or by content: an 8-byte little-endian header length, then the JSON header."""
    with open(path, "rb") as f:
        head = f.read(9)
    size = int.from_bytes(head[:8], "little") if len(head) == 9 else 0
    return path.suffix == ".safetensors" or (head[8:9] == b"{" and 0 < size < path.stat().st_size)


def torchscript_prefix(path: Path) -> str | None:
    """The record folder of a TorchScript archive (a zip whose ``data.pkl`` has ``code/`` or
    ``constants.pkl`` beside it), else None. ``torch.load`` hands such a file to ``torch.jit.load``,
    which compiles the archive's code and runs the ``__setstate__`` methods it defines: never called here."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return None
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    for name in names:
        if name.endswith("data.pkl"):
            prefix = name[: -len("data.pkl")]
            if f"{prefix}constants.pkl" in names or any(n.startswith(f"{prefix}code/") for n in names):
                return prefix
    return None


def read_torchscript_attributes(path: Path, prefix: str, seen: set[str]) -> dict[str, Any]:
    """Every attribute of a TorchScript archive's modules by qualified name: tensors
    (``net.layers.conv.weight``) and plain values (``net.layers.conv.stride``: ints, floats, bools,
    strings, lists of them), read from its ``data.pkl`` by the :class:`SafeUnpickler`: its scripted
    modules become inert placeholders whose attributes are walked; the archive's code is never
    compiled, nothing in it runs. A list TorchScript pickles through ``build_intlist`` (and its float,
    bool and tensor kin) is given as the plain list its placeholder recorded."""
    import io
    import zipfile

    with zipfile.ZipFile(path) as archive:
        module = _pickle_module(_torch_allowed(), (torch.Tensor, OrderedDict), True, seen)

        class ArchiveUnpickler(module.Unpickler):  # type: ignore[name-defined]
            def persistent_load(self, pid):
                _, storage_type, key, _, _ = pid  # ('storage', type, key, location, numel)
                data = archive.read(f"{prefix}data/{key}")
                dtype = storage_type.dtype if hasattr(storage_type, "dtype") else storage_type
                if not isinstance(dtype, torch.dtype):
                    raise pickle.UnpicklingError(f"storage of type {storage_type!r:.60}")
                raw = torch.UntypedStorage.from_buffer(data, dtype=torch.uint8) if data else torch.UntypedStorage(0)
                return torch.storage.TypedStorage(wrap_storage=raw, dtype=dtype, _internal=True)

        root = ArchiveUnpickler(io.BytesIO(archive.read(f"{prefix}data.pkl"))).load()
    values: dict[str, Any] = {}

    def walk(obj, name: str, depth: int) -> None:
        state = getattr(obj, "state", None)
        if depth > 64 or not isinstance(state, dict):
            return
        for key, value in state.items():
            if isinstance(value, InertGlobal):
                if value.qualname.startswith("torch.jit._pickle.build_") and len(value.args) == 1:
                    values[f"{name}{key}"] = list(value.args[0])
                else:
                    walk(value, f"{name}{key}.", depth + 1)
            else:
                values[f"{name}{key}"] = value

    walk(root, "", 0)
    return values


def read_torchscript_tensors(path: Path, prefix: str, seen: set[str]) -> dict[str, torch.Tensor]:
    """The tensors of a TorchScript archive by qualified attribute name (``net.layers.conv.weight``),
    read without running anything (:func:`read_torchscript_attributes`)."""
    return {k: v for k, v in read_torchscript_attributes(path, prefix, seen).items() if isinstance(v, torch.Tensor)}


def read_checkpoint(path: str | Path, knob: str) -> tuple[Any, set[str]]:
    """The object tree of a ``torch.save`` file (zip or legacy) or a .safetensors file, and the
    names of the pickled globals that became inert placeholders; a TorchScript archive gives its
    tensors by name (:func:`read_torchscript_tensors`), never a loaded script module."""
    path = Path(path)
    seen: set[str] = set()
    try:
        if _is_safetensors(path):
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu"), seen
        prefix = torchscript_prefix(path)
        if prefix is not None:
            tensors = read_torchscript_tensors(path, prefix, seen)
            if not tensors:
                raise pickle.UnpicklingError("a TorchScript archive without tensors")
            return tensors, set()
        module = _pickle_module(_torch_allowed(), (torch.Tensor, OrderedDict), True, seen)
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=module), seen
    except Exception as e:  # noqa: BLE001 - truncated, random or hostile bytes end in many different errors
        if seen:
            raise ConfigError(
                f"{knob}: {path} holds {_objects(seen)}, which PTSBench does not run; {ACCEPTED}"
            ) from None
        raise ConfigError(
            f"{knob}: {path} is not a readable checkpoint ({type(e).__name__}: {_first_line(e)}); {ACCEPTED}"
        ) from None


def read_state_dict(path: str | Path, knob: str) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint: a bare state dict, or the one under ``state_dict``/``model``/...
    of a training checkpoint, with ``module.``/``_orig_mod.`` prefixes dropped."""
    state, seen = read_checkpoint(path, knob)
    while isinstance(state, dict):
        key = next((k for k in WRAPPER_KEYS if isinstance(state.get(k), dict)), None)
        if key is None:
            break
        state = state[key]
    values = list(state.values()) if isinstance(state, dict) else [state]
    inert = {v.qualname for v in values if isinstance(v, InertGlobal)} | (
        {type(state).__dict__.get("qualname", "?")} if isinstance(state, InertGlobal) else set()
    )
    if inert:
        raise ConfigError(f"{knob}: {path} holds {_objects(inert)}, which PTSBench does not run; {ACCEPTED}")
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in values):
        found = type(state).__name__ if not isinstance(state, dict) else f"dict with keys {list(state)[:6]}"
        raise ConfigError(f"{knob}: {path} holds no state dict of tensors (found {found}); {ACCEPTED}")
    for prefix in PREFIXES:
        if all(str(k).startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return dict(state)


def read_pickled_arrays(path: str | Path, knob: str, expected: str, encoding: str = "latin1") -> Any:
    """A plain pickle of dicts, lists, strings, numbers and numpy arrays (e.g. a CIFAR batch);
    a file that names any other Python global is refused before anything is called."""
    path = Path(path)
    module = _pickle_module(_numpy_allowed(), (np.ndarray, np.dtype), False, set())
    try:
        with open(path, "rb") as f:
            return module.load(f, encoding=encoding)
    except RefusedGlobal as e:
        raise ConfigError(
            f"{knob}: {path} holds {_objects({e.name})}, which PTSBench does not run; expected {expected}"
        ) from None
    except Exception as e:  # noqa: BLE001
        raise ConfigError(
            f"{knob}: {path} is not a readable pickle ({type(e).__name__}: {_first_line(e)}); expected {expected}"
        ) from None
