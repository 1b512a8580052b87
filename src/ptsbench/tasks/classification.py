"""Classification task: top-1 accuracy (docs/methods.md#tasks-and-metrics)."""

from __future__ import annotations

import torch
from torch import nn

from .base import TASKS, Task, TaskConfig


@torch.no_grad()
def top1_accuracy(model: nn.Module, loader, device: torch.device | str = "cpu") -> float:
    model.eval()
    correct = total = 0
    for x, y in loader:
        logits = model(x.to(device, non_blocking=True))
        correct += int((logits.argmax(1).cpu() == y).sum())
        total += len(y)
    return correct / max(total, 1)


@TASKS.register("cls", config=TaskConfig, label="CLS", order=0)
class ClassificationTask(Task):
    def evaluate(self, model, data, device) -> dict[str, float]:
        return {"top1": top1_accuracy(model, self.limited(data.test_loader(self.batch_size)), device)}
