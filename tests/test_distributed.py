"""The guard follows training into torch.distributed (issue 12): ``torchrun`` (one node and two nodes on one
machine, sharing a spool) and ``accelerate launch``, two CPU ranks each, gloo backend, a real ``Trainer`` (DDP)
on the zoo's Qwen3 layout. The misaligned layout fails the test with one TG101 naming both ranks; the
aligned one passes.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest.importorskip("transformers")
pytest.importorskip("accelerate")
import torch  # noqa: F401  (imported before pytester's in-process runs)

from pytest_tokenguard.children import hook, parent, spool  # noqa: F401  (idem)
from pytest_tokenguard.guard import capture, routing  # noqa: F401  (idem)
from tests.test_children import QWEN3_HEADLINE, QWEN3_UPDATED

pytest_plugins = ("pytester",)
pytestmark = pytest.mark.distributed

SCRIPT = Path(__file__).parent / "data" / "children" / "ddp_train.py"

LAUNCH = """
import os, socket, subprocess, sys
import pytest

def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]

def launch(*command, count=2):
    run = subprocess.run([sys.executable, "-m", *command], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    assert run.stdout.count(" DONE") == count, run.stdout
"""

TG101_RANKS = [
    "TG101 Trainer rewrote special tokens to match the tokenizer",
    "  phase:   call, seen 2 times",
    "  process: ranks 0, 1 (pids *, *)",
    f"  updated tokens: {QWEN3_UPDATED}",
]


@pytest.fixture
def launcher(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    shutil.copy(SCRIPT, pytester.path / "ddp_train.py")
    pytester.makepyfile(launch=LAUNCH)
    return pytester


def test_torchrun_two_ranks(launcher: pytest.Pytester) -> None:
    launcher.makepyfile(
        test_torchrun="""
        import pytest
        from launch import launch

        @pytest.mark.parametrize("layout", ["misaligned", "aligned"])
        def test_ddp(layout):
            launch("torch.distributed.run", "--standalone", "--nproc_per_node=2", "ddp_train.py", layout)
        """
    )
    result = launcher.runpytest("--tokenguard", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            *TG101_RANKS,
            "FAILED test_torchrun.py::test_ddp[[]misaligned[]] - tokenguard: TG101 Trainer rewrote special tokens to "
            f"match the tokenizer ({QWEN3_HEADLINE}) in ranks 0, 1 (2 findings)",
        ]
    )
    assert "test_ddp[aligned]" not in result.stdout.str().split("short test summary info")[1]


def test_two_nodes_share_a_spool(launcher: pytest.Pytester, tmp_path: Path) -> None:
    """Two launches with different ``--node_rank`` (one rank each) write to the spool named by
    ``--tokenguard-spool``: one finding, ranks 0 and 1. The spool directory is left as it was found."""
    launcher.makepyfile(
        test_nodes="""
        import subprocess, sys
        from launch import free_port

        def test_two_nodes():
            port = free_port()
            nodes = [
                subprocess.Popen(
                    [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1",
                     f"--node_rank={rank}", "--master_addr=127.0.0.1", f"--master_port={port}",
                     "--rdzv-conf=timeout=120", "ddp_train.py", "misaligned"],
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                )
                for rank in (0, 1)
            ]
            for node in nodes:
                out, err = node.communicate(timeout=600)
                assert node.returncode == 0, err[-4000:]
                assert out.count(" DONE") == 1
        """
    )
    shared = tmp_path / "shared-spool"
    result = launcher.runpytest("--tokenguard", "-p", "no:cacheprovider", f"--tokenguard-spool={shared}")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([*TG101_RANKS, "FAILED test_nodes.py::test_two_nodes (TG101)"])
    assert list(shared.iterdir()) == []  # the session's spool inside it is gone


def test_accelerate_launch_two_ranks(launcher: pytest.Pytester) -> None:
    """``accelerate launch --multi_gpu`` on CPU: accelerate runs torch.distributed.run in its own process
    (``--cpu`` starts a single process: accelerate expects MPI for several CPU processes; see README)."""
    launcher.makepyfile(
        test_accelerate="""
        from launch import free_port, launch

        def test_accelerate():
            launch("accelerate.commands.launch", "--multi_gpu", "--num_processes=2", "--num_machines=1",
                   "--mixed_precision=no", "--dynamo_backend=no", f"--main_process_port={free_port()}",
                   "ddp_train.py", "misaligned")
        """
    )
    result = launcher.runpytest("--tokenguard", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([*TG101_RANKS, "FAILED test_accelerate.py::test_accelerate (TG101)"])
