"""ptsbench's Slurm launcher where Hydra looks for launchers (only classes under ``hydra_plugins`` may be one).

``hydra/launcher=slurm`` (conf/hydra/launcher/slurm.yaml) names this class; everything it does is in
``ptsbench.slurm_launcher``. Without hydra-submitit-launcher (the ``launchers`` extra) it defines nothing.
"""

try:
    from ptsbench.slurm_launcher import SlurmLauncher as _CheckedSlurmLauncher
except ImportError:  # the launchers extra is not installed: hydra/launcher=slurm is then unavailable anyway
    pass
else:

    class SlurmLauncher(_CheckedSlurmLauncher):
        """submitit's Slurm launcher, checked before it submits and watched until every job is over."""
