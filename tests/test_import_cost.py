"""An idle plugin costs nothing: what loading the plugin imports, and what a guarded run without transformers imports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = """
import json, sys
BEFORE = set(sys.modules)

def pytest_unconfigure(config):
    loaded = sorted(m for m in set(sys.modules) - BEFORE if m.split(".")[0] in ("pytest_tokenguard", "transformers", "torch"))
    with open("modules.json", "w") as handle:
        json.dump(loaded, handle)
"""


def _subprocess_env() -> dict[str, str]:
    # the source tree first, so this checkout (not an older installed wheel) is what is measured
    root = str(Path(__file__).resolve().parents[1])
    return dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))


def test_importing_the_plugin_module_imports_nothing_else_of_the_package() -> None:
    code = (
        "import sys, pytest; before = set(sys.modules); import pytest_tokenguard.plugin; print(sorted(set(sys.modules) - before))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=_subprocess_env())
    assert run.stdout.strip() == "['pytest_tokenguard', 'pytest_tokenguard.plugin']"


@pytest.mark.parametrize("args", [("--tokenguard",), ()], ids=["guarded", "idle"])
def test_a_run_that_never_imports_transformers_loads_no_guard(tmp_path: Path, args: tuple[str, ...]) -> None:
    (tmp_path / "probe_plugin.py").write_text(PROBE)
    (tmp_path / "test_plain.py").write_text(
        "import pytest\n\ndef test_a():\n    assert 1\n\n@pytest.mark.tokenguard\ndef test_marked():\n    assert 2\n"
    )
    env = _subprocess_env()
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env["PYTHONPATH"]])
    command = [sys.executable, "-m", "pytest", "-p", "probe_plugin", "-p", "no:cacheprovider", "-p", "no:xdist", *args]
    run = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "tokenguard: clean, 2 guarded tests" in run.stdout if args else "tokenguard: clean, 1 guarded test" in run.stdout
    loaded = json.loads((tmp_path / "modules.json").read_text())
    # the plugin (loaded after the probe), the session object, the suite's fixtures plugin, for the summary the
    # output helpers, and the child-process guard (both runs guard a test, which may start a Python process that
    # imports transformers): no guard, no static checks, no transformers
    expected = [
        "pytest_tokenguard",
        "pytest_tokenguard.children",
        "pytest_tokenguard.children.hook",
        "pytest_tokenguard.children.parent",
        "pytest_tokenguard.children.spool",
        "pytest_tokenguard.output",
        "pytest_tokenguard.plugin",
        "pytest_tokenguard.session",
        "pytest_tokenguard.suite",
        "pytest_tokenguard.suite.plugin",
    ]
    assert loaded == expected
