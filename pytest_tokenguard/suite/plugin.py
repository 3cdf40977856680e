"""The test kit's pytest side: the suite's options and the zoo fixtures.

``plugin.py`` calls :func:`add_options` from ``pytest_addoption`` and registers this module as a plugin
from ``pytest_configure`` (as pytest-qt registers its logging plugin), after :func:`check_options`.
The zoo and the suite support are imported only when a fixture or a check needs them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pytest_tokenguard.suite.zoo import ZooModel


def add_options(group: pytest.OptionGroup) -> None:
    group.addoption(
        "--tokenguard-model",
        metavar="PATH",
        help="run the bundled suite (--pyargs pytest_tokenguard.suite) on this local checkpoint folder instead of the zoo",
    )
    group.addoption("--tokenguard-adapter", metavar="PATH", help="with --tokenguard-model: a local peft adapter folder")


def check_options(config: pytest.Config) -> None:
    """Raise ``pytest.UsageError`` naming the file when ``--tokenguard-model``/``--tokenguard-adapter`` are unusable."""
    model, adapter = config.getoption("tokenguard_model"), config.getoption("tokenguard_adapter")
    for flag, value in (("--tokenguard-model", model), ("--tokenguard-adapter", adapter)):
        if value is not None and not value.strip():  # "" would silently mean "no checkpoint": the whole zoo
            raise pytest.UsageError(f"tokenguard: {flag} is empty; give a local folder, e.g. {flag} ./my-checkpoint")
    if adapter and not model:
        raise pytest.UsageError("tokenguard: --tokenguard-adapter needs --tokenguard-model")
    if model:
        from pytest_tokenguard.suite.support import checkpoint_problem

        problem = checkpoint_problem(model, adapter)
        if problem:
            raise pytest.UsageError(f"tokenguard: {problem}")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "tokenguard_zoo" in metafunc.fixturenames:
        from pytest_tokenguard.suite import zoo

        metafunc.parametrize("tokenguard_zoo", zoo.families(), indirect=True)


@pytest.fixture
def tokenguard_zoo(request: pytest.FixtureRequest) -> ZooModel:
    """Each zoo family in turn (test ids carry the family): ``.name``, ``.model``, ``.tokenizer``, ``.layout``."""
    from pytest_tokenguard.suite import zoo

    return zoo.zoo_model(request.param)


@pytest.fixture
def tokenguard_zoo_factory() -> Callable[[str], ZooModel]:
    """``factory("qwen3-0.6b")`` -> a fresh ``ZooModel`` of that family (built once per process)."""
    from pytest_tokenguard.suite import zoo

    return zoo.zoo_model
