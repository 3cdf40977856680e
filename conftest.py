"""Project-wide test configuration: pytester drives the plugin in-process."""

from __future__ import annotations

import os

import pytest

pytest_plugins = ("pytester",)

# Users' reproductions (tests/data/cases/*/test_*.py) and child scripts: run by the tests that own them, in
# their own pytest sessions and processes, never collected as this project's tests.
collect_ignore = ["tests/data"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--zoo-families",
        choices=("one", "all"),
        default="all" if os.environ.get("CI") == "true" else "one",
        help="the bundled-suite run from the installed wheel covers one zoo family (default locally) or all (default "
        "with CI=true)",
    )
