"""Deployable outputs of a run: sparse checkpoints (bitmask + non-zeros), the model rebuilt from them, and
``ptsbench-export`` (dense state dict, compressed checkpoint, ONNX)."""
