"""Datasets register themselves by name (``DATASETS``); every submodule is imported."""

from ..autoload import import_submodules
from ..schemas import register_group
from .base import DATASETS, CalibConfig, DataBundle

import_submodules(__name__, __path__)
register_group("dataset", "name", lambda: {n: DATASETS.get(n).config for n in DATASETS})
register_group("calib", None, lambda: {"default": CalibConfig})


def build_data(dataset_cfg, calib_cfg, **context) -> DataBundle:
    """``context`` (``preprocess``: the model's eval transform, ``cache_dir``) reaches the builders that set
    ``takes_context``: real image datasets preprocess the way the model's weights expect and may cache decoded
    images. The caller (the pipeline) picks the transform, so the data layer never reaches up into models."""
    builder = DATASETS.get(dataset_cfg.name)
    if getattr(builder, "takes_context", False):
        return builder(dataset_cfg, calib_cfg, **context)
    return builder(dataset_cfg, calib_cfg)


__all__ = ["DATASETS", "DataBundle", "build_data"]
