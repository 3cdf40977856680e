"""pytest hooks of tokenguard: options, markers, fixtures, and hooks that delegate.

The runtime guard lives in ``guard/`` (:class:`~pytest_tokenguard.guard.session.GuardSession`, one per
config, in ``config.stash``), the static checks in ``static/``, the test kit and the bundled suite in
``suite/`` (its fixtures are a plugin of their own, registered from ``pytest_configure``).
"""

from __future__ import annotations

from collections.abc import Generator

import pytest

from pytest_tokenguard.guard.fixture import TokenGuard
from pytest_tokenguard.guard.session import STASH, GuardSession
from pytest_tokenguard.suite import plugin as suite_plugin


def pytest_addoption(parser: pytest.Parser) -> None:
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
    parser.addini(
        "tokenguard_synthesize",
        default="auto",
        help="auto: synthesize TG101 at Trainer.train() where the installed Trainer does not align tokens "
        "(transformers < 4.56); always; never",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "tokenguard: guard this test (or class, module) without --tokenguard")
    config.addinivalue_line(
        "markers",
        'tokenguard_allow(*codes, reason): allow these tokenguard codes here, e.g. tokenguard_allow("TG101", reason="...")',
    )
    session = GuardSession(config)
    suite_plugin.check_options(config)
    config.stash[STASH] = session
    config.pluginmanager.register(session, "tokenguard-session")
    config.pluginmanager.register(suite_plugin, "tokenguard-suite")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    config.stash[STASH].plan(items)


def pytest_deselected(items: list[pytest.Item]) -> None:
    if items:
        session = items[0].config.stash.get(STASH, None)
        if session is not None:
            session.deselected(items)


# Plain tryfirst impls (not wrappers): they run before the runner sets up fixtures or calls the
# test, which is all that is needed, and cost less per test than generator wrappers.
@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    item.config.stash[STASH].enter_phase(item, "setup")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> None:
    item.config.stash[STASH].enter_phase(item, "call")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    item.config.stash[STASH].enter_phase(item, "teardown")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    item.config.stash[STASH].make_report(item, call.when, report)
    return report


@pytest.fixture
def tokenguard(request: pytest.FixtureRequest) -> TokenGuard:
    """Findings of this test; ``expect(*codes)``, ``assert_clean()``, ``clear()``, ``check(model, tokenizer)``."""
    return request.config.stash[STASH].fixture(request)


def pytest_unconfigure(config: pytest.Config) -> None:
    session = config.stash.get(STASH, None)
    if session is not None:
        session.close()
