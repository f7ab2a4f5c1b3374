"""Optional dependencies: ``require(module, extra)`` imports a module or raises one clear error naming the extra.

``pip install textebm`` gives the prior, the samplers, the learning rules, the LSTM decoder, training and sampling.
The rest comes with extras: ``[text]`` (datasets, sentencepiece, kenlm), ``[transformer]`` (transformers, with
tokenizers), ``[hub]`` (huggingface_hub: push and pull models), ``[peft]`` (low-rank adapters for a pretrained
decoder), ``[images]`` (pillow, scikit-learn), ``[plots]`` (matplotlib), ``[tensorboard]``, ``[test]``, ``[all]``.
"""
from __future__ import annotations

import importlib

#: module -> the extra that installs it
EXTRA_OF = {
    "datasets": "text", "sentencepiece": "text", "kenlm": "text",
    "transformers": "transformer", "tokenizers": "transformer",
    "huggingface_hub": "hub", "peft": "peft",
    "PIL": "images", "sklearn": "images",
    "matplotlib": "plots",
    "torch.utils.tensorboard": "tensorboard", "tensorboard": "tensorboard",
    "hypothesis": "test",
}


class MissingExtraError(ImportError):
    """An optional library is not installed; the message says which extra installs it."""


def require(module: str, what: str = "", extra: str | None = None):
    """Import ``module`` or raise :class:`MissingExtraError`: "<what> needs <module>: pip install 'textebm[extra]'"."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        # name the library that is missing: torch.utils.tensorboard fails because tensorboard is absent
        missing = getattr(e, "name", None) or module
        top = missing.split(".")[0] if missing.split(".")[0] in EXTRA_OF else module.split(".")[0]
        extra = extra or EXTRA_OF.get(module) or EXTRA_OF.get(top, "all")
        need = f"{what} needs " if what else ""
        raise MissingExtraError(f"{need}{top}, which is not installed ({e}); install it with "
                                f"pip install 'textebm[{extra}]'") from None
