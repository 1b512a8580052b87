"""Checks of a config against this machine and the data's real sizes, run by
``config.spec.resolve`` before any data or model is loaded.

- the folders a run writes to (records, cache, outputs) are writable now, not after the run;
- ``device`` names a device this machine has;
- the task is one the model serves and the dataset provides (``tasks:`` in conf/model/*.yaml and
  conf/dataset/*.yaml), instead of an internal error mid-evaluation;
- the split and calibration knobs of the embedded datasets fit their real sizes, and with zoo
  weights (``model.weights=zoo`` or a path to a shipped zoo checkpoint's bytes, recognised by
  hash) the test split lies inside the images the zoo checkpoints never saw (the zoo's split
  seed, at most its held-out count);
- a checkpoint path is a file, not a folder (for sources that load files).
Each failure is one ConfigError naming the knob, the value and what is valid.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError

# Embedded datasets whose split the knobs choose: total images, and the split the zoo was trained
# on (scripts/train_zoo.py and train_zoo_gen.py build the dataset with its defaults).
EMBEDDED_SPLITS: dict[str, dict[str, Any]] = {
    "mnist5k": {"size": 5000, "zoo_split": {"num_test": 1000, "split_seed": 0}},
    "fashion5k": {"size": 5000, "zoo_split": {"num_test": 1000, "split_seed": 0}},
    "mnist5k_gen": {"size": 5000, "zoo_split": {"num_test": 1000, "split_seed": 0}},
    "digits": {"size": 1797, "zoo_split": None},  # no zoo checkpoint is trained on it
}


def check_writable(knob: str, value) -> None:
    """``value`` is, or can be created as, a folder this process may write to."""
    path = Path(str(value)).expanduser()
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise ConfigError(f"{knob}='{value}' cannot be a folder: '{probe}' is a file; pass a writable folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(
            f"{knob}='{value}' is not writable ('{probe}' denies this user); pass a writable folder, "
            f"e.g. {knob}=$HOME/ptsbench/{Path(str(value)).name or 'out'}"
        )


def check_output_dirs(paths) -> None:
    for knob in ("records_dir", "cache_dir", "output_dir"):
        check_writable(f"paths.{knob}", getattr(paths, knob))


def check_device(spec: str) -> None:
    """``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``, and present on this machine."""
    valid = "auto, cpu, cuda, cuda:N, mps"
    if spec in ("auto", "cpu"):
        return
    if spec == "cuda" or spec.startswith("cuda:"):
        index = spec[5:]
        if index and not index.isdigit():
            raise ConfigError(f"device={spec}: not a device; valid: {valid}")
        if not torch.cuda.is_available():
            raise ConfigError(f"device={spec}: CUDA is not available here; use device=auto or device=cpu")
        if index and int(index) >= torch.cuda.device_count():
            raise ConfigError(
                f"device={spec}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                f"cuda:0..cuda:{torch.cuda.device_count() - 1}; use device=auto or one of those"
            )
        return
    if spec == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ConfigError("device=mps: Apple MPS is not available here; use device=auto or device=cpu")
        return
    raise ConfigError(f"device={spec}: not a device PTSBench runs on; valid: {valid}")


def check_task_fit(task: str, model, dataset) -> None:
    """``tasks:`` (conf/model/*.yaml, conf/dataset/*.yaml; may be absent) names the tasks a model or
    dataset serves; another ``task=`` is refused, naming both."""
    for group, node in (("model", model), ("dataset", dataset)):
        served = node.tasks
        if served is not None and task not in served:
            name = node.name
            raise ConfigError(
                f"task={task} does not fit {group}={name}, which serves task {', '.join(served)}; "
                f"pick a {group} for task={task} or task={served[0]}"
            )


def _int_knob(knob: str, value, low: int, high: int | None, why: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        bound = f"an integer in [{low}, {high}]" if high is not None else f"an integer >= {low}"
        raise ConfigError(f"{knob}={value!r} must be {bound}{why}")
    return value


def check_split(dataset, model, calib) -> None:
    """Split and calibration sizes of the embedded datasets against their real size; the zoo's own
    test split (the typed configs have passed their own type and range checks)."""
    spec = EMBEDDED_SPLITS.get(str(dataset.name))
    if spec is None:
        return
    name, size = str(dataset.name), spec["size"]
    num_test = _int_knob(
        "dataset.num_test",
        dataset.num_test,
        1,
        size - 1,
        f" ({name} has {size} images; the rest are the training split)",
    )
    zoo = spec["zoo_split"]
    outside = zoo and (dataset.split_seed != zoo["split_seed"] or num_test > zoo["num_test"])
    weights = _zoo_weights(str(model.weights), name) if outside else None
    if weights:
        # the test split is perm[:num_test] of the split seed's permutation: with the zoo's seed and at most
        # its num_test, it is a subset of the images the checkpoints never saw
        raise ConfigError(
            f"dataset.num_test={num_test} dataset.split_seed={dataset.split_seed}: {weights} "
            f"were trained on {name} with split_seed={zoo['split_seed']} holding "
            f"out {zoo['num_test']} test images, so this split puts their training images into the "
            f"test set; use dataset.split_seed={zoo['split_seed']} and dataset.num_test <= "
            f"{zoo['num_test']}, or other weights (model.weights=none|<path>)"
        )
    if name != "mnist5k_gen":  # its calibration inputs come from sampling, not the training split
        _int_knob(
            "calib.num_samples",
            calib.num_samples,
            1,
            size - num_test,
            f" ({name} has {size - num_test} training images to calibrate on)",
        )


def _zoo_weights(weights: str, dataset: str) -> str | None:
    """How the run names zoo weights trained on ``dataset`` (``model.weights=zoo``, or a path to the
    same bytes as a shipped zoo checkpoint, recognised by SHA-256), else None."""
    if weights == "zoo":
        return "the zoo checkpoints (model.weights=zoo)"
    if weights in ("none", "None", "torchvision", "timm"):
        return None
    from ..models.zoo_files import zoo_checkpoint_of

    hit = zoo_checkpoint_of(weights)
    if hit is None or hit[1] != dataset:
        return None
    return f"the weights in model.weights={weights} (the zoo checkpoint {hit[0]}__{hit[1]}.pt, same SHA-256)"


def check_weights_file(path: Path | None, knob: str = "model.weights") -> None:
    if path is not None and path.is_dir():
        raise ConfigError(f"{knob}='{path}' is a folder; pass the checkpoint file itself (.pt/.pth/.bin/.safetensors)")


def resolve_device(spec: str) -> torch.device:
    """The torch device ``device=`` names (``auto``: CUDA when present, else the CPU)."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    check_device(spec)
    return torch.device(spec)
