"""The public API: what users import, annotate, catch and read. Type-checked by ``make lint`` (mypy strict)."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata

import pytest

import pytest_tokenguard
from pytest_tokenguard import (
    Report,
    RuntimeFinding,
    StaticFinding,
    TokenAlignmentError,
    TokenGuard,
    TokenguardStaleAllowWarning,
    check_special_tokens,
)
from pytest_tokenguard.suite import zoo


@pytest.mark.tokenguard
def test_typed_fixture_and_findings(tokenguard: TokenGuard) -> None:
    from transformers.utils import logging as hf_logging

    model, tokenizer = zoo.build("qwen3-0.6b")
    report: Report = check_special_tokens(model, tokenizer)
    static: StaticFinding = report.findings[0]
    assert (static.code, static.severity) == ("TG201", "warning")
    with tokenguard.expect("TG110"):
        hf_logging.get_logger("transformers.generation.utils").warning(
            "Setting `pad_token_id` to `eos_token_id`:151645 for open-end generation."
        )
    runtime: RuntimeFinding = tokenguard.records[0]
    assert (runtime.code, runtime.phase, runtime.expected, runtime.count) == ("TG110", "call", True, 1)
    with pytest.raises(TokenAlignmentError) as raised:
        tokenguard.check(model, tokenizer)
    assert [f.code for f in raised.value.failing] == ["TG201"]


def test_all_is_the_user_api_and_every_name_resolves() -> None:
    for name in pytest_tokenguard.__all__:
        assert getattr(pytest_tokenguard, name) is not None, name
    assert StaticFinding.__name__ != RuntimeFinding.__name__
    assert issubclass(TokenguardStaleAllowWarning, pytest.PytestWarning)
    assert issubclass(TokenAlignmentError, AssertionError)
    internals = {"classify", "ENTRIES", "TokenguardSession", "capture", "zoo"}
    assert not internals & set(pytest_tokenguard.__all__)


def test_version_comes_from_the_installed_metadata() -> None:
    assert pytest_tokenguard.__version__ == metadata.version("pytest-tokenguard")


def test_importing_the_package_imports_nothing_else_of_it() -> None:
    code = (
        "import sys, pytest_tokenguard; "
        "print(sorted(m for m in sys.modules if m.startswith(('pytest_tokenguard', 'transformers', 'torch'))))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "['pytest_tokenguard']"


def test_0_2_module_paths_still_import() -> None:
    # a fresh interpreter: in-process pytester runs elsewhere in this session re-import modules
    code = (
        "import pytest_tokenguard.strategies as old_strategies, pytest_tokenguard.suite.strategies as strategies\n"
        "import pytest_tokenguard.zoo as old_zoo, pytest_tokenguard.suite.zoo as zoo_module\n"
        "from pytest_tokenguard import zoo as from_package\n"
        "assert old_zoo is zoo_module is from_package and old_strategies is strategies\n"
        "print(from_package.build('qwen3-0.6b')[1].pad_token_id)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "151643"
