"""Matplotlib figures generated from run records (PNG, headless Agg backend)."""
