"""pytest-tokenguard: catch BOS/EOS/PAD drift between model config, tokenizer and generation config.

The user API is listed in ``__all__`` and loaded on first use: importing this package (as pytest does
when it loads the plugin) imports nothing else of it, and never transformers or torch.

- Static checks (``pytest_tokenguard.static``): :func:`check_special_tokens`,
  :func:`assert_special_tokens_aligned`, :func:`read_folder`, the fix helpers.
- Runtime guard (``pytest_tokenguard.guard``): the ``tokenguard`` fixture (:class:`TokenGuard`), its
  :class:`RuntimeFinding` records.
- Test kit (``pytest_tokenguard.suite``): the zoo of tiny models, hypothesis strategies, the bundled suite.
"""

from __future__ import annotations

import importlib

# Not ``typing.TYPE_CHECKING``: typing costs milliseconds, and every guarded child process imports this package.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from pytest_tokenguard.guard.catalog import RUNTIME_CODES
    from pytest_tokenguard.guard.findings import RuntimeFinding
    from pytest_tokenguard.guard.fixture import TokenGuard, TokenGuardFailure
    from pytest_tokenguard.session import TokenguardStaleAllowWarning
    from pytest_tokenguard.static.alignment import align_special_tokens, generation_config_for, predict_trainer_alignment
    from pytest_tokenguard.static.api import assert_special_tokens_aligned, check_special_tokens
    from pytest_tokenguard.static.checks import STATIC_CODES, Report, StaticFinding, TokenAlignmentError
    from pytest_tokenguard.static.folder import FolderError, FolderLayout, read_folder
    from pytest_tokenguard.static.sequences import check_batch, check_fields

#: public name -> the module that defines it
_HOMES = {
    "RUNTIME_CODES": "pytest_tokenguard.guard.catalog",
    "ENTRIES": "pytest_tokenguard.guard.catalog",
    "classify": "pytest_tokenguard.guard.catalog",
    "RuntimeFinding": "pytest_tokenguard.guard.findings",
    "TokenGuard": "pytest_tokenguard.guard.fixture",
    "TokenGuardFailure": "pytest_tokenguard.guard.fixture",
    "TokenguardStaleAllowWarning": "pytest_tokenguard.session",
    "align_special_tokens": "pytest_tokenguard.static.alignment",
    "generation_config_for": "pytest_tokenguard.static.alignment",
    "predict_trainer_alignment": "pytest_tokenguard.static.alignment",
    "assert_special_tokens_aligned": "pytest_tokenguard.static.api",
    "check_special_tokens": "pytest_tokenguard.static.api",
    "STATIC_CODES": "pytest_tokenguard.static.checks",
    "Report": "pytest_tokenguard.static.checks",
    "StaticFinding": "pytest_tokenguard.static.checks",
    "TokenAlignmentError": "pytest_tokenguard.static.checks",
    "check_batch": "pytest_tokenguard.static.sequences",
    "check_fields": "pytest_tokenguard.static.sequences",
    "FolderError": "pytest_tokenguard.static.folder",
    "FolderLayout": "pytest_tokenguard.static.folder",
    "read_folder": "pytest_tokenguard.static.folder",
}


def __getattr__(name: str) -> object:
    if name == "__version__":
        from importlib import metadata

        try:
            return metadata.version("pytest-tokenguard")
        except metadata.PackageNotFoundError:  # a source tree that was never installed
            return "0+unknown"
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__version__: str

__all__ = [
    "RUNTIME_CODES",
    "STATIC_CODES",
    "FolderError",
    "FolderLayout",
    "Report",
    "RuntimeFinding",
    "StaticFinding",
    "TokenAlignmentError",
    "TokenGuard",
    "TokenGuardFailure",
    "TokenguardStaleAllowWarning",
    "__version__",
    "align_special_tokens",
    "assert_special_tokens_aligned",
    "check_batch",
    "check_fields",
    "check_special_tokens",
    "generation_config_for",
    "predict_trainer_alignment",
    "read_folder",
]
