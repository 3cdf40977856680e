"""Project-wide test configuration: pytester drives the plugin in-process."""

from __future__ import annotations

import os

import pytest

pytest_plugins = ("pytester",)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--zoo-families",
        choices=("one", "all"),
        default="all" if os.environ.get("CI") == "true" else "one",
        help="the bundled-suite run from the installed wheel covers one zoo family (default locally) or all (default "
        "with CI=true)",
    )
