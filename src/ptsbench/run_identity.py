"""The digest that names a run (SPEC §7: a sweep re-run skips runs whose record is ``ok`` with the
same digest): the resolved config without the knobs that change where a run executes
(``record.NON_SEMANTIC_KEYS``) or only declare things (``DIGEST_IGNORED``), plus the content hash
of a user weight file (issue 12 item 1).
"""

from __future__ import annotations

from . import record as rec_io

# Declarations that select nothing a run computes: leaving them out keeps the digests (and so the
# skip-finished matching) of records written before they existed.
DIGEST_IGNORED = (("model", "tasks"), ("dataset", "tasks"))


def run_digest(cfg_dict: dict, weights_hash: str | None = None) -> str:
    """Config digest of a run; a user weight file's content hash enters it (the path alone does not
    tell a replaced file apart)."""
    view = {k: (dict(v) if isinstance(v, dict) else v) for k, v in cfg_dict.items()}
    for group, key in DIGEST_IGNORED:
        if isinstance(view.get(group), dict):
            view[group].pop(key, None)
    if weights_hash is not None:
        view["weights_sha256"] = weights_hash
    return rec_io.config_digest(view)
