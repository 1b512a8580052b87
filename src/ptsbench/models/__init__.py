"""Model construction: architecture and weight source are separate knobs (docs/methods.md#model-repository).

``model.source`` picks the builder (``zoo`` for the embedded architectures, ``torchvision`` and
``timm`` for the paper's Table 1 in :mod:`.library`); ``model.weights`` is ``none`` (random
init), ``zoo`` (the checkpoint trained by scripts/train_zoo.py), ``torchvision``/``timm`` (the
published weights named by ``model.pretrained``, from the local cache only), or a local
checkpoint path (:mod:`.checkpoints`). Nothing is downloaded.
"""

from .sources import (
    MODEL_SOURCES,
    ZOO_DIR,
    LibraryModelConfig,
    ModelConfig,
    build_model,
    load_weights,
    save_zoo_checkpoint,
    weights_path,
    zoo_checkpoint_path,
)

__all__ = [
    "MODEL_SOURCES",
    "ZOO_DIR",
    "LibraryModelConfig",
    "ModelConfig",
    "build_model",
    "load_weights",
    "save_zoo_checkpoint",
    "weights_path",
    "zoo_checkpoint_path",
]
