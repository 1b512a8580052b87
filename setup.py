"""Packages of the wheel: everything under src/ plus the top-level conf/ as ``ptsbench.conf``.

pyproject.toml's ``packages.find`` cannot add a package from outside ``src/``, hence this file; the
rest of the metadata lives in pyproject.toml. conf/'s group folders are listed as (data-only)
subpackages so setuptools ships their YAML files without warning about them.
"""

from setuptools import find_namespace_packages, find_packages, setup

CONF = ["ptsbench.conf", *(f"ptsbench.conf.{p}" for p in find_namespace_packages("conf"))]
# Hydra finds launchers only under the hydra_plugins namespace (no __init__.py, so find_packages skips it)
PLUGINS = ["hydra_plugins.ptsbench_slurm"]
setup(packages=[*find_packages("src"), *PLUGINS, *CONF])
