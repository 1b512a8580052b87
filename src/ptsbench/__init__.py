"""PTSBench: a post-training sparsity benchmark for vision models."""
__version__ = "0.1.0"
