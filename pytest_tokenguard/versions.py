"""Version facts: which transformers is installed and what its Trainer does to special tokens.

The one home for every "since version X" of the project, built on ``packaging.version`` (a pytest
dependency). Installed versions are read from package metadata (``importlib.metadata``), so nothing
here imports transformers.
"""

from __future__ import annotations

import functools
import sys
from importlib import metadata

from packaging.version import InvalidVersion, Version

#: First transformers release whose ``Trainer.train()`` aligns the model config and generation config
#: with the tokenizer and logs "Updated tokens: {...}" (TG101; transformers PR #38441).
TRAINER_ALIGNS_SINCE = Version("4.56")
#: First release whose alignment skips a tokenizer value of None; 4.56-5.17 write None over a config id
#: the tokenizer does not define (Qwen's bos) and "update" an eos declared as a list every time.
TRAINER_SKIPS_NONE_SINCE = Version("5.18")


def parse(version: str) -> Version:
    """``"5.0.0rc1"`` -> ``Version("5.0.0")``: the release only, so a pre-release counts as its release.

    Raises ``ValueError`` (``packaging``'s ``InvalidVersion``) for text that is no version.
    """
    return Version(".".join(str(part) for part in Version(version).release))


@functools.cache
def installed(package: str) -> Version | None:
    """The installed release of ``package`` (from its metadata), or None when absent or unparsable."""
    try:
        return parse(metadata.version(package))
    except (metadata.PackageNotFoundError, InvalidVersion):
        return None


def installed_text(package: str) -> str | None:
    """The installed version of ``package`` exactly as its metadata spells it (None when absent)."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def transformers() -> Version | None:
    """The installed transformers release (None when transformers is not installed).

    Once transformers is imported its ``__version__`` answers (no metadata scan); before, its metadata does.
    """
    module = sys.modules.get("transformers")
    version = getattr(module, "__version__", None)
    if isinstance(version, str):
        try:
            return parse(version)
        except InvalidVersion:
            pass
    return installed("transformers")


def _resolve(version: Version | str | None) -> Version | None:
    if version is None:
        return transformers()
    return version if isinstance(version, Version) else parse(version)


def trainer_aligns(version: Version | str | None = None) -> bool:
    """Whether ``Trainer.train()`` of ``version`` (default: the installed one) aligns special tokens.

    True when transformers is not installed (nothing to synthesize for).
    """
    resolved = _resolve(version)
    return resolved is None or resolved >= TRAINER_ALIGNS_SINCE


def trainer_writes_none(version: Version | str | None = None) -> bool:
    """Whether the Trainer of ``version`` (default: installed) writes the tokenizer's None over a config id."""
    resolved = _resolve(version)
    return resolved is not None and TRAINER_ALIGNS_SINCE <= resolved < TRAINER_SKIPS_NONE_SINCE


def in_range(version: Version | str, first: str, last: str | None) -> bool:
    """``first <= version <= last`` (``last`` None: no upper bound), comparing releases only."""
    resolved = _resolve(version)
    assert resolved is not None
    return parse(first) <= resolved and (last is None or resolved <= parse(last))
