"""PTSBench's Hydra configs, shipped in the wheel as the package ``ptsbench.conf`` (see pyproject.toml)."""
