"""pytest-tokenguard: catch BOS/EOS/PAD drift between model config, tokenizer and generation config.

Importing this package imports neither transformers nor torch.
"""

from __future__ import annotations

from .catalog import ENTRIES, RUNTIME_CODES, classify
from .findings import Finding
from .fixture import TokenGuard, TokenGuardFailure

__version__ = "0.1.0"

__all__ = ["ENTRIES", "RUNTIME_CODES", "Finding", "TokenGuard", "TokenGuardFailure", "__version__", "classify"]
