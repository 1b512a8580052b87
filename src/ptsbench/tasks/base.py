"""Task interface: (model, data) -> metrics. Each task names its primary metric and direction."""
from __future__ import annotations

from ..registry import Registry

TASKS: Registry = Registry("task", "task")


class Task:
    name = "base"
    metric = ""
    higher_is_better = True

    def __init__(self, batch_size: int = 256, **params):
        self.batch_size = batch_size
        self.params = params

    def evaluate(self, model, data, device) -> dict[str, float]:
        raise NotImplementedError

    def forward_for_calibration(self, model, x):
        """What learned allocators/reconstruction run the model on (logits for classifiers)."""
        return model(x)

    def calibration_inputs(self, model, data, device, calib_cfg):
        """The calibration set ``forward_for_calibration`` runs on, taken from the dense ``model``
        only when an allocator or reconstruction needs it: the dataset's images by default; a
        diffusion task captures its UNet inputs over sampling instead."""
        return data.calib_inputs
