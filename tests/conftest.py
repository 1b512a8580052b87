"""Shared fixtures: compose the real Hydra config tree the CLI uses."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from ptsbench.config import register

ROOT = Path(__file__).resolve().parents[1]
CONF = str(ROOT / "conf")

# One torch thread for the whole suite: the tests run many small ops, where a second OpenMP
# thread only adds spin-waits (2-20x slower on a shared 2-core machine).
torch.set_num_threads(1)
register()  # the schema nodes and resolvers the config files name (as the entry points do)


@pytest.fixture(autouse=True)
def no_hydra_run_config_leaks():
    """Hydra's run config is a process global: one test's choices must not become the next test's record."""
    from hydra.core.hydra_config import HydraConfig

    yield
    HydraConfig.instance().cfg = None


def compose_cfg(overrides: list[str], out_dir: Path):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(config_name="config", overrides=[f"paths.output_dir={out_dir}", *overrides])


@pytest.fixture
def make_cfg(tmp_path):
    def _make(*overrides: str, out_dir: Path | None = None):
        return compose_cfg(list(overrides), out_dir or tmp_path / "out")

    return _make
