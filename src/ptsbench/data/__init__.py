"""Datasets register themselves by name (``DATASETS``); every submodule is imported."""
from ..autoload import import_submodules
from .base import DATASETS, DataBundle

import_submodules(__name__, __path__)


def build_data(dataset_cfg, calib_cfg) -> DataBundle:
    return DATASETS.get(dataset_cfg.name)(dataset_cfg, calib_cfg)


__all__ = ["DATASETS", "DataBundle", "build_data"]
