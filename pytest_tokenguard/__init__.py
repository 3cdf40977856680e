"""pytest-tokenguard: catch BOS/EOS/PAD drift between model config, tokenizer and generation config.

Importing this package imports neither transformers nor torch.
"""

from __future__ import annotations

from .alignment import align_special_tokens, generation_config_for, predict_trainer_alignment
from .api import assert_special_tokens_aligned, check_special_tokens
from .catalog import ENTRIES, RUNTIME_CODES, classify
from .checks import STATIC_CODES, Report, TokenAlignmentError
from .findings import Finding
from .folder import FolderError, read_folder

__version__ = "0.2.0"


def __getattr__(name: str) -> object:
    # The fixture classes need pytest; the CLI and the checks do not, so they are loaded on demand.
    if name in ("TokenGuard", "TokenGuardFailure"):
        from . import fixture

        return getattr(fixture, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ENTRIES",
    "RUNTIME_CODES",
    "STATIC_CODES",
    "Finding",
    "FolderError",
    "Report",
    "TokenAlignmentError",
    "TokenGuard",
    "TokenGuardFailure",
    "__version__",
    "align_special_tokens",
    "assert_special_tokens_aligned",
    "check_special_tokens",
    "classify",
    "generation_config_for",
    "predict_trainer_alignment",
    "read_folder",
]
