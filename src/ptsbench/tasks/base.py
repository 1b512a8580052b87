"""Task interface: (model, data) -> metrics. Each task names its primary metric (``task.metric``) and
its direction; a task is constructed from its typed knobs and the evaluation knobs (``eval.*``)."""

from __future__ import annotations

from dataclasses import dataclass

from ..registry import Registry
from ..schemas import Schema, knob

TASKS: Registry = Registry("task", "task", plugins="ptsbench.tasks")


@dataclass(frozen=True)
class TaskConfig(Schema):
    """The knobs of task=cls and task=det (conf/task/*.yaml gives their values)."""

    name: str = knob()
    metric: str = knob()  # the primary metric the tables compare


@dataclass(frozen=True)
class EvalConfig(Schema):
    """``eval.*``: how dense and sparse models are evaluated."""

    batch_size: int = knob(500, ge=1)
    dense_cache: bool = knob(True)  # evaluate each dense (model, dataset) once per sweep
    # score only the first N test samples (smoke runs: debug=fast); null: the whole split
    max_samples: int | None = knob(None, ge=1, omit_at_default=True)
    # classifier inputs in NHWC layout, so conv kernels run channels-last: 1.8x faster for EfficientNet-Lite's
    # depthwise convs on one CPU thread (scripts/bench_eval_layout.py); off by default so recorded scores keep
    # their kernels (the same values up to float rounding)
    channels_last: bool = knob(False, omit_at_default=True)
    # time dense vs sparse kernels on the pruned model (speed/latency.py); batch size and repeats of the timing
    latency: bool = knob(False, omit_at_default=True)
    latency_batch_size: int = knob(32, ge=1, omit_at_default=True)
    latency_repeats: int = knob(20, ge=3, omit_at_default=True)


class Task:
    higher_is_better = True

    def __init__(self, config: TaskConfig, evaluation: EvalConfig | None = None):
        evaluation = evaluation or EvalConfig()
        self.config = config
        self.batch_size = evaluation.batch_size
        self.channels_last = evaluation.channels_last
        self.max_samples = evaluation.max_samples  # score the first N test samples only (smoke runs)

    @property
    def metric(self) -> str:
        return self.config.metric

    def limited(self, batches):
        """The (inputs, targets) batches of ``batches`` cut after the first ``max_samples`` samples
        (all of them when ``max_samples`` is None), so a smoke run scores a fixed prefix of the test split."""
        left = self.max_samples
        for x, y in batches:
            if left is not None and left <= 0:
                break
            if left is not None and len(x) > left:
                x, y = x[:left], y[:left]
            if left is not None:
                left -= len(x)
            yield x, y

    def evaluate(self, model, data, device) -> dict[str, float]:
        raise NotImplementedError

    def evaluate_dense(self, model, data, device):
        """(the dense ``model``'s metrics, its outputs on the test inputs that ``evaluate_sparse`` compares a
        pruned model against, or None where the task compares none). By default: ``evaluate``, None."""
        return self.evaluate(model, data, device), None

    def evaluate_sparse(self, model, reference, data, device) -> dict[str, float]:
        """The pruned ``model``'s metrics; ``reference`` (``evaluate_dense``'s outputs) lets a task add
        label-free fidelity metrics (classification: agreement and KL). By default: ``evaluate``."""
        return self.evaluate(model, data, device)

    def forward_for_calibration(self, model, x):
        """What learned allocators/reconstruction run the model on (logits for classifiers)."""
        return model(x)

    def calibration_inputs(self, model, data, device, calib):
        """The calibration set ``forward_for_calibration`` runs on, taken from the dense ``model``
        only when an allocator or reconstruction needs it: the dataset's images by default; a
        diffusion task captures its UNet inputs over sampling instead."""
        return data.calib_inputs
