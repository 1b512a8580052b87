"""Classification task: top-1 accuracy, and for a sparse model its fidelity to the dense one
(top-1 agreement and KL divergence; docs/methods.md#tasks-and-metrics)."""

from __future__ import annotations

import torch
from torch import nn

from .base import TASKS, Task, TaskConfig


def fidelity(dense_logits: torch.Tensor, sparse_logits: torch.Tensor) -> tuple[int, float]:
    """(inputs where both models' top-1 class is the same, sum over inputs of KL(dense || sparse) in nats)
    of one batch of (N, classes) logits. The softmax distributions are taken with log_softmax in float64,
    so a confident logit neither overflows nor rounds a probability to 0; a per-input KL that rounding
    pushed below 0 counts as 0 (KL is never negative).

    Dense p = softmax(ln 3, 0) = (3/4, 1/4), sparse q = (1/4, 3/4): the top-1 classes differ and
    KL = 3/4 ln 3 + 1/4 ln(1/3) = ln(3)/2; a second input with equal logits agrees and adds 0:

    >>> import math
    >>> dense = torch.tensor([[math.log(3), 0.0], [0.0, 2.0]])
    >>> sparse = torch.tensor([[0.0, math.log(3)], [0.0, 2.0]])
    >>> agreeing, kl_sum = fidelity(dense, sparse)
    >>> agreeing, round(kl_sum, 6), round(math.log(3) / 2, 6)
    (1, 0.549306, 0.549306)
    """
    agreeing = int((dense_logits.argmax(1) == sparse_logits.argmax(1)).sum())
    log_p = torch.log_softmax(dense_logits.double(), dim=1)
    log_q = torch.log_softmax(sparse_logits.double(), dim=1)
    kl = (log_p.exp() * (log_p - log_q)).sum(1).clamp_min(0.0)
    return agreeing, float(kl.sum())


FIDELITY_CHUNK = 4096  # inputs per float64 softmax: bounds the memory of a large split's KL


@torch.no_grad()
def classify(
    model: nn.Module, loader, device: torch.device | str = "cpu", channels_last: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits (N, classes) on the CPU, labels (N,)) of ``model`` over ``loader``'s (inputs, labels) batches;
    ``channels_last`` hands image batches over in NHWC layout (the weights stay as they are)."""
    model.eval()
    logits, labels = [], []
    for x, y in loader:
        x = x.to(device, non_blocking=True)
        if channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        logits.append(model(x).float().cpu())
        labels.append(y)
    if not logits:
        return torch.zeros(0, 0), torch.zeros(0, dtype=torch.long)
    return torch.cat(logits), torch.cat(labels)


def evaluate_classifier(
    model: nn.Module,
    loader,
    device: torch.device | str = "cpu",
    reference: torch.Tensor | None = None,
    outputs: list | None = None,
    channels_last: bool = False,
) -> dict[str, float]:
    """``top1`` of ``model`` over ``loader``; with ``reference`` (the dense model's logits on the same
    inputs, in order) also ``agreement`` (the fraction of inputs where both models' top-1 class is the
    same) and ``kl`` (the mean KL(reference || model) in nats). ``outputs``, when given, receives the
    logits, so the dense evaluation hands them to every sparse one (the dense model runs once)."""
    logits, labels = classify(model, loader, device, channels_last)
    total = max(len(labels), 1)
    metrics = {"top1": int((logits.argmax(1) == labels).sum()) / total if len(labels) else 0.0}
    if outputs is not None:
        outputs.append(logits)
    if reference is not None:
        if reference.shape != logits.shape:
            raise ValueError(
                f"the dense reference logits are {tuple(reference.shape)}, the model's {tuple(logits.shape)}: "
                "they must come from the same test inputs"
            )
        agreeing, kl_sum = 0, 0.0
        for start in range(0, len(logits), FIDELITY_CHUNK):
            part = slice(start, start + FIDELITY_CHUNK)
            chunk_agreeing, chunk_kl = fidelity(reference[part], logits[part])
            agreeing, kl_sum = agreeing + chunk_agreeing, kl_sum + chunk_kl
        metrics.update(agreement=agreeing / total, kl=kl_sum / total)
    return metrics


def top1_accuracy(model: nn.Module, loader, device: torch.device | str = "cpu") -> float:
    """The fraction of ``loader``'s inputs whose top-1 class is the label."""
    return evaluate_classifier(model, loader, device)["top1"]


@TASKS.register("cls", config=TaskConfig, label="CLS", order=0)
class ClassificationTask(Task):
    def evaluate(self, model, data, device) -> dict[str, float]:
        return self._scored(model, data, device)

    def evaluate_dense(self, model, data, device) -> tuple[dict[str, float], torch.Tensor | None]:
        """``top1`` and the logits on the test inputs, the reference of every sparse evaluation."""
        outputs: list = []
        metrics = self._scored(model, data, device, outputs=outputs)
        return metrics, outputs[0]

    def evaluate_sparse(self, model, reference, data, device) -> dict[str, float]:
        """``top1`` plus the sparse model's ``agreement`` with and ``kl`` from the dense logits ``reference``."""
        return self._scored(model, data, device, reference=reference)

    def _scored(self, model, data, device, **kwargs) -> dict[str, float]:
        """``evaluate_classifier`` on the (limited) test split, in the evaluation's batch size and layout."""
        loader = self.limited(data.test_loader(self.batch_size))
        return evaluate_classifier(model, loader, device, channels_last=self.channels_last, **kwargs)
