"""pytest hooks of tokenguard: options, markers, the fixture, and hooks that delegate.

The session (:class:`~pytest_tokenguard.session.TokenguardSession`, one per config, in ``config.stash``)
holds the per-test hooks and registers them only when the run guards something; the runtime guard lives in
``guard/``, the static checks in ``static/``, the test kit and the bundled suite in ``suite/`` (its fixtures
are a plugin of their own, registered from ``pytest_configure``). This module imports nothing else of the
package at import time: each hook imports what it needs, so loading the plugin costs next to nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pytest_tokenguard.guard.fixture import TokenGuard
    from pytest_tokenguard.session import TokenguardSession

_STASH: pytest.StashKey[TokenguardSession] = pytest.StashKey()


def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    from pytest_tokenguard.session import skip_assertion_rewriting

    skip_assertion_rewriting(pluginmanager)
    group = parser.getgroup("tokenguard", "fail tests on transformers special-token warnings")
    group.addoption(
        "--tokenguard",
        action="store_true",
        default=None,
        help="fail each test during which transformers warns about bos/eos/pad alignment (ini: tokenguard)",
    )
    group.addoption(
        "--tokenguard-allow",
        action="append",
        default=[],
        metavar="CODE[,CODE]",
        help="allow these codes in every test (ini: tokenguard_allow)",
    )
    group.addoption("--tokenguard-report", metavar="PATH", help="write the findings of every guarded test as JSON")
    group.addoption(
        "--tokenguard-strict",
        action="store_true",
        default=None,
        help="warning-severity TG2xx findings fail too (tokenguard.check, --tokenguard-calls) (ini: tokenguard_strict)",
    )
    group.addoption(
        "--tokenguard-calls",
        action="store_true",
        default=None,
        help="check the objects at every Trainer.train() and generate() call (ini: tokenguard_calls)",
    )
    group.addoption(
        "--tokenguard-children",
        choices=("yes", "no"),
        default=None,
        help="guard the Python processes a guarded test starts (subprocess, multiprocessing, DataLoader workers, "
        "torchrun, accelerate launch); default yes (ini: tokenguard_children)",
    )
    group.addoption(
        "--tokenguard-spool",
        metavar="DIR",
        help="where child processes leave their findings (default: under pytest's temporary directory); "
        "for several nodes, a directory every node can write (ini: tokenguard_spool)",
    )
    from pytest_tokenguard.suite import plugin as suite_plugin

    suite_plugin.add_options(group)
    group.addoption(
        "--tokenguard-baseline",
        metavar="PATH",
        help="record (when PATH does not exist) or compare the token behaviour of tests that use the tokenguard fixture",
    )
    group.addoption("--tokenguard-update-baseline", action="store_true", help="rewrite the baseline with this run")
    group.addoption(
        "--tokenguard-baseline-strict",
        action="store_true",
        help="fail the run when the baseline has entries for tests that no longer exist",
    )
    parser.addini("tokenguard", type="bool", default=False, help="enable tokenguard for every test")
    parser.addini("tokenguard_allow", type="linelist", default=[], help="codes allowed in every test")
    parser.addini("tokenguard_strict", type="bool", default=False, help="warning-severity TG2xx findings fail too")
    parser.addini("tokenguard_calls", type="bool", default=False, help="check objects at Trainer.train() and generate()")
    parser.addini("tokenguard_children", default="yes", help="guard child processes of guarded tests: yes or no")
    parser.addini("tokenguard_spool", default="", help="spool directory for child processes' findings")
    parser.addini(
        "tokenguard_synthesize",
        default="auto",
        help="auto: synthesize TG101 at Trainer.train() where the installed Trainer does not align tokens "
        "(transformers < 4.56); always; never",
    )


def pytest_configure(config: pytest.Config) -> None:
    from pytest_tokenguard.session import ALLOW_MARKER, MARKER, TokenguardSession
    from pytest_tokenguard.suite import plugin as suite_plugin

    config.addinivalue_line("markers", f"{MARKER}: guard this test (or class, module) without --tokenguard")
    config.addinivalue_line(
        "markers",
        f'{ALLOW_MARKER}(*codes, reason): allow these tokenguard codes here, e.g. {ALLOW_MARKER}("TG101", reason="...")',
    )
    session = TokenguardSession(config)
    suite_plugin.check_options(config)
    config.stash[_STASH] = session
    config.pluginmanager.register(suite_plugin, "tokenguard-suite")
    session.start()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    config.stash[_STASH].plan(items)


def pytest_deselected(items: list[pytest.Item]) -> None:
    if items:
        session = items[0].config.stash.get(_STASH, None)
        if session is not None:
            session.deselected(items)


@pytest.fixture
def tokenguard(request: pytest.FixtureRequest) -> TokenGuard:
    """Findings of this test; ``expect(*codes)``, ``assert_clean()``, ``clear()``, ``check(model, tokenizer)``."""
    return request.config.stash[_STASH].fixture(request)


def pytest_unconfigure(config: pytest.Config) -> None:
    session = config.stash.get(_STASH, None)
    if session is not None:
        session.close()
