"""Datasets (a labelled test split, unlabelled calibration inputs); each module of this package registers
its builders in ``DATASETS`` (imported on first lookup)."""

from ..schemas import typed
from .base import DATASETS, CalibConfig, DataBundle


def build_data(dataset, calib, **context) -> DataBundle:
    """The bundle of the ``dataset`` config (typed, or a mapping of its knobs). ``context`` (``preprocess``: the model's eval transform,
    ``cache_dir``) reaches the builders registered with ``takes_context``: real image datasets preprocess
    the way the model's weights expect and may cache decoded images. The caller (the pipeline) picks the
    transform, so the data layer never reaches up into models."""
    entry = DATASETS.entry(dataset.name if not isinstance(dataset, dict) else dataset["name"])
    dataset, calib = typed("dataset", DATASETS.config(entry.name), dataset), typed("calib", CalibConfig, calib)
    if entry.trait("takes_context", False):
        return entry.obj(dataset, calib, **context)
    return entry.obj(dataset, calib)


__all__ = ["DATASETS", "CalibConfig", "DataBundle", "build_data"]
