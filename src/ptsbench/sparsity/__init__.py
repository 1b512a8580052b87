"""Sparsity primitives: prunable-layer discovery, BN folding, magnitude masks, allocators."""
