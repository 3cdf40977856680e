"""The ``.pth`` file of the child guard in a real virtual environment: written for a run, removed after it;
a run killed with SIGKILL leaves one that activates nothing and that the next run removes; ``pip uninstall``
leaves none behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

from pytest_tokenguard.children import parent, spool

pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[1]

CHILD_TEST = """
import subprocess, sys

def test_child():
    code = ("from transformers.utils import logging; "
            "logging.get_logger('transformers.generation.utils').warning('padding_side right: pad token eos')")
    subprocess.run([sys.executable, "-c", code], check=True)
"""

SLEEPING_TEST = """
import json, os, pathlib, time

def test_sleeps():
    pathlib.Path("ready.json").write_text(json.dumps({k: v for k, v in os.environ.items() if k.startswith("PYTEST_TOKENGUARD")}))
    time.sleep(120)
"""

PROBE = """
import json, sys
print(json.dumps({
    "imported": [name for name in sys.modules if name.startswith("pytest_tokenguard")],
    "triggers": [type(finder).__name__ for finder in sys.meta_path if type(finder).__module__.startswith("pytest_tokenguard")],
}))
"""


def _pth_files(site: Path) -> list[str]:
    return sorted(path.name for path in site.glob(f"{parent.PTH_PREFIX}-*.pth"))


def test_pth_lifecycle_in_a_virtual_environment(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    site = Path(
        subprocess.check_output([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], text=True).strip()
    )
    pip = [sys.executable, "-m", "pip", "--python", python, "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "install", "--no-deps", str(ROOT)], check=True)
    # pytest, transformers, torch from this environment, after the new one's own site-packages
    (site / "zz_test_dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    work = tmp_path / "work"
    work.mkdir()
    (work / "test_child.py").write_text(CHILD_TEST)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_TOKENGUARD", "PYTHONPATH"))}
    pytest_command = [python, "-m", "pytest", "--tokenguard", "-p", "no:cacheprovider", "-p", "no:xdist", "-q"]

    # a normal run: the child is guarded, and the .pth is gone afterwards
    run = subprocess.run([*pytest_command, "test_child.py"], cwd=work, env=env, capture_output=True, text=True)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "FAILED test_child.py::test_child (TG100)" in run.stdout, run.stdout
    assert _pth_files(site) == []

    # a run killed with SIGKILL while a test runs: its .pth stays, and activates nothing
    (work / "test_sleeps.py").write_text(SLEEPING_TEST)
    killed = subprocess.Popen([*pytest_command, "test_sleeps.py"], cwd=work, env=env, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (work / "ready.json").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert (work / "ready.json").exists() and _pth_files(site) == [f"{parent.PTH_PREFIX}-{spool.host()}-{killed.pid}.pth"]
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    assert _pth_files(site) != []
    inherited = json.loads((work / "ready.json").read_text())
    live = tmp_path / "live-spool"
    live.mkdir()
    spool.write_session(str(live), spool.SessionInfo(os.getpid(), spool.host()))
    assert set(inherited) == {spool.SPOOL_ENV, spool.TEST_ENV}
    plain = json.loads(subprocess.check_output([python, "-c", PROBE], env=env, text=True))
    assert plain == {"imported": [], "triggers": []}  # no variable: one lookup, nothing imported
    orphan = json.loads(subprocess.check_output([python, "-c", PROBE], env={**env, **inherited}, text=True))
    assert orphan == {"imported": [], "triggers": []}  # the variables of a dead session: nothing stays active
    alive = json.loads(
        subprocess.check_output(
            [python, "-c", PROBE], env={**env, **inherited, **{"PYTEST_TOKENGUARD_SPOOL": str(live)}}, text=True
        )
    )
    assert alive == {"imported": [], "triggers": ["_Trigger"]}, _pth_files(
        site
    )  # the same line with a live session's spool: armed

    # the next run on this host removes the dead session's file, and its own
    run = subprocess.run([*pytest_command, "test_child.py"], cwd=work, env=env, capture_output=True, text=True)
    assert run.returncode == 1, run.stdout + run.stderr
    assert _pth_files(site) == []

    # pip uninstall leaves no .pth (nor anything else of the package) behind
    subprocess.run([*pip, "uninstall", "-y", "pytest-tokenguard"], check=True)
    assert _pth_files(site) == []
    assert not list(site.glob("pytest_tokenguard-*.dist-info"))
    # (pytest's own rewritten-bytecode caches of the bundled suite may stay where bytecode is written: not ours)
    assert not list(site.glob("pytest_tokenguard/**/*.py"))
    assert (Path(sysconfig.get_path("purelib")) / "pytest_tokenguard").is_dir()  # this environment's copy untouched
