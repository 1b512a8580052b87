"""The run's configuration: Hydra's config tree readied once (:func:`register`), then resolved once into
a frozen, typed :class:`~ptsbench.config.spec.RunSpec` (``ptsbench.config.spec.resolve``).

``register()`` is the one explicit registration: it imports the plugins named outside this tree
(``PTSBENCH_PLUGINS``, a comma-separated list of modules, and the ``ptsbench.plugins`` entry-point group),
stores every group's schema nodes in Hydra's ConfigStore by walking the registries (``groups.GROUPS``),
and registers the OmegaConf resolvers the config files use. It is idempotent; the entry points
(``ptsbench.run``, ``ptsbench.batch``, the sweep plan) and the test fixtures call it. Importing this
package registers only the resolvers of Hydra's run and sweep folders (``ptsbench.file_names``): a
launcher's worker resolves its job's folder before the task function runs, and unpickling that function
imports this package.
"""

from __future__ import annotations

import importlib
import os
from importlib.metadata import entry_points

from .. import config_dir
from ..file_names import register_resolvers as register_folder_resolvers

register_folder_resolvers()

PLUGINS_ENV = "PTSBENCH_PLUGINS"
ENTRY_POINT_GROUP = "ptsbench.plugins"
_registered = False


def load_plugins() -> list[str]:
    """Import the plugin modules named by ``$PTSBENCH_PLUGINS`` and the ``ptsbench.plugins`` entry points;
    their ``@REGISTRY.register(...)`` decorators add their methods. Returns the module names."""
    names = [n.strip() for n in os.environ.get(PLUGINS_ENV, "").split(",") if n.strip()]
    names += [ep.value.split(":")[0] for ep in entry_points(group=ENTRY_POINT_GROUP)]
    for name in names:
        importlib.import_module(name)
    return names


def _register_slurm_launcher() -> None:
    """Make ``hydra/launcher=slurm`` resolvable however ptsbench is installed.

    Hydra finds launchers by walking ``hydra_plugins`` on disk with pkgutil, which cannot see the
    import hook of an editable (``pip install -e``) install; registering the class directly works for
    wheels and editable installs alike. Without the ``launchers`` extra there is no class to register."""
    try:
        from hydra_plugins.ptsbench_slurm import SlurmLauncher
    except ImportError:
        return
    from hydra.core.plugins import Plugins

    Plugins.instance().register(SlurmLauncher)


def register() -> None:
    """Ready Hydra for PTSBench (idempotent): plugins, schema nodes, resolvers."""
    global _registered
    if _registered:
        return
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    from ..devices import default_parallel_jobs
    from ..help import help_text
    from .groups import GROUPS, option_nodes, root_node

    load_plugins()
    _register_slurm_launcher()
    store = ConfigStore.instance()
    store.store(name="ptsbench_schemas", node=root_node())
    for name, group in GROUPS.items():
        if group.option_files:
            for option, node in option_nodes(name).items():
                store.store(group=f"schema/{name}", name=option, node=node)
    # conf/hydra/launcher/parallel.yaml: n_jobs; conf/config.yaml: hydra.help.template
    OmegaConf.register_new_resolver("ptsbench_parallel_jobs", default_parallel_jobs, replace=True)
    OmegaConf.register_new_resolver("ptsbench_help", lambda: help_text(config_dir()), replace=True)
    _registered = True
