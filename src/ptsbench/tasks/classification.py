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


@torch.no_grad()
def evaluate_classifier(
    model: nn.Module, loader, device: torch.device | str = "cpu", reference: nn.Module | None = None
) -> dict[str, float]:
    """``top1`` of ``model`` over ``loader``'s (inputs, labels) batches; with ``reference`` (the dense
    model) also ``agreement`` (the fraction of inputs where both models' top-1 class is the same) and
    ``kl`` (the mean KL(reference || model) in nats), both models run on each batch in one pass."""
    model.eval()
    if reference is not None:
        reference.eval()
    correct = total = agreeing = 0
    kl_sum = 0.0
    for x, y in loader:
        x = x.to(device, non_blocking=True)
        logits = model(x)
        correct += int((logits.argmax(1).cpu() == y).sum())
        total += len(y)
        if reference is not None:
            batch_agreeing, batch_kl = fidelity(reference(x), logits)
            agreeing += batch_agreeing
            kl_sum += batch_kl
    metrics = {"top1": correct / max(total, 1)}
    if reference is not None:
        metrics.update(agreement=agreeing / max(total, 1), kl=kl_sum / max(total, 1))
    return metrics


def top1_accuracy(model: nn.Module, loader, device: torch.device | str = "cpu") -> float:
    """The fraction of ``loader``'s inputs whose top-1 class is the label."""
    return evaluate_classifier(model, loader, device)["top1"]


@TASKS.register("cls", config=TaskConfig, label="CLS", order=0)
class ClassificationTask(Task):
    def evaluate(self, model, data, device) -> dict[str, float]:
        return evaluate_classifier(model, self.limited(data.test_loader(self.batch_size)), device)

    def evaluate_sparse(self, model, dense_model, data, device) -> dict[str, float]:
        """``top1`` plus the sparse model's ``agreement`` with and ``kl`` from ``dense_model``."""
        return evaluate_classifier(model, self.limited(data.test_loader(self.batch_size)), device, dense_model)
