"""PTSBench: a post-training sparsity benchmark for vision models."""

from pathlib import Path

__version__ = "0.1.0"


def config_dir() -> Path:
    """The Hydra config tree: the wheel's copy (``ptsbench/conf``) when installed, else the checkout's conf/.

    conf/ at the top of the repository is the one tree anybody edits; ``pip install .`` ships it
    inside the package (pyproject.toml maps ``ptsbench.conf`` to it), so an installed CLI finds it
    from any directory. Add your own configs beside these with ``hydra.searchpath`` (README).
    """
    packaged = Path(__file__).resolve().parent / "conf"
    if (packaged / "config.yaml").is_file():
        return packaged
    return Path(__file__).resolve().parents[2] / "conf"
