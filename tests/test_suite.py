"""The bundled suite, run the way users run it: from the installed package, in a fresh process."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pytest_tokenguard import align_special_tokens, versions
from pytest_tokenguard.guard.findings import RuntimeFinding
from pytest_tokenguard.suite import zoo
from pytest_tokenguard.suite.support import SFT_TRL, add_dedicated_pad, expected_trainer_updates
from pytest_tokenguard.suite.table import SUITE_CODES_PROPERTY, SUITE_PROPERTY, SuiteTable

STEPS = ["static_check", "lora_training", "sft_trainer", "labels_keep_eos", "save_and_reload", "generation"]
#: the SFT step needs trl >= support.SFT_TRL (and datasets); where they are missing or older it is skipped with that reason
_TRL = versions.installed_text("trl")
SFT_OUTCOME = (
    "passed" if _TRL and versions.parse(_TRL) >= versions.parse(SFT_TRL) and importlib.util.find_spec("datasets") else "skipped"
)


def run_suite(cwd: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    """``python -m pytest --tokenguard --pyargs pytest_tokenguard.suite`` from ``cwd`` with the installed
    package (no PYTHONPATH, so a source checkout cannot stand in for the wheel)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    command = [
        sys.executable,
        "-m",
        "pytest",
        "--tokenguard",
        "--pyargs",
        "pytest_tokenguard.suite",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:xdist",
        *args,
    ]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_suite_passes_on_the_zoo_from_the_installed_package(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Every zoo family in CI (``--zoo-families all``, the default with CI=true); Qwen3-0.6B alone in a local
    ``make test`` (about a minute less on 2 cores)."""
    whole = request.config.getoption("zoo_families") == "all"
    families = zoo.families() if whole else ["qwen3-0.6b"]
    selection = () if whole else ("-k", "qwen3-0.6b and not base")
    run = run_suite(tmp_path, "--tokenguard-report", "report.json", "-q", *selection)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-6000:]
    assert list(tmp_path.iterdir()) == [tmp_path / "report.json"], "nothing else is written to the working folder"
    assert "tokenguard suite: family x step" in output
    for family in families:
        assert any(line.startswith(family + " ") for line in output.splitlines()), family
    report = json.loads((tmp_path / "report.json").read_text())
    suite = report["suite"]
    assert sorted(suite) == sorted(families)
    for family, steps in suite.items():
        expected_steps = [*STEPS, "character_chat_moses"] if family == "qwen3-0.6b" else STEPS
        assert sorted(steps) == sorted(expected_steps), family
        outcomes = {step: cell["outcome"] for step, cell in steps.items()}
        assert outcomes == {step: SFT_OUTCOME if step == "sft_trainer" else "passed" for step in steps}, (family, steps)
    # TG101 was expected exactly where the Trainer aligns something: the families whose tokenizer pads
    # differently from the config (after the usual pad = eos for tokenizers without pad)
    assert suite["qwen3-0.6b"]["lora_training"]["codes"].get("TG101") == "expected"
    if whole:
        # gemma's eos list: nothing to align from 5.18 on (and before 4.56); 4.56-5.17 always "update" a list
        gemma_model, gemma_tokenizer = zoo.build("gemma-2-2b-it")
        gemma_updates = expected_trainer_updates(gemma_model, gemma_tokenizer, not versions.trainer_aligns())
        assert ("TG101" in suite["gemma-2-2b-it"]["lora_training"]["codes"]) == bool(gemma_updates)
    assert suite["qwen3-0.6b"]["generation"]["codes"].get("TG113") == "expected"
    assert any(nodeid.endswith("test_lora_training[qwen3-0.6b]") for nodeid in report["tests"])
    assert report["versions"]["pytest-tokenguard"] is not None


def test_installed_package_ships_suite_and_data(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = (
        "import pytest_tokenguard, pytest_tokenguard.suite.test_suite as s; from importlib import resources; "
        "print(pytest_tokenguard.__file__); "
        "print(resources.files('pytest_tokenguard').joinpath('_data/token_layouts.json').is_file())"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    location, has_data = run.stdout.split()
    assert "site-packages" in location and has_data == "True"


def test_family_names_in_test_ids_select_with_k(tmp_path: Path) -> None:
    run = run_suite(tmp_path, "--collect-only", "-q", "-k", "qwen3")
    ids = [line for line in run.stdout.splitlines() if "::" in line]
    assert ids and all("qwen3" in line for line in ids)
    assert any(line.endswith("test_lora_training[qwen3-0.6b]") for line in ids)
    assert any(line.endswith("test_character_chat_moses[qwen3-0.6b]") for line in ids)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    # aligned: TinyLlama's layout with a dedicated pad token, so its tokenizer defines bos, eos and pad (no
    # transformers version has anything left to rewrite; a Qwen tokenizer has no bos, which 4.56-5.17 still
    # write as None) and EOS labels survive the collator
    folders = {}
    for name, family, fix in (("misaligned", "qwen3-0.6b", False), ("aligned", "tinyllama-1.1b-chat-v1.0", True)):
        model, tokenizer = zoo.build(family)
        if fix:
            add_dedicated_pad(model, tokenizer)
            align_special_tokens(model, tokenizer)
        folder = tmp_path_factory.mktemp(name) / f"{family.split('-')[0]}-{name}"
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        folders[name] = folder
    return folders


def test_user_checkpoint_misaligned_fails_naming_codes(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    run = run_suite(tmp_path, "--tokenguard-model", str(checkpoints["misaligned"]), "--tokenguard-report", "r.json")
    output = run.stdout + run.stderr
    assert run.returncode == 1, output[-4000:]
    suite = json.loads((tmp_path / "r.json").read_text())["suite"]
    (row,) = suite.values()
    assert row["static_check"] == {"outcome": "failed", "codes": {"TG201": "failing", "TG206": "static"}, "notes": []}
    assert row["lora_training"] == {"outcome": "failed", "codes": {"TG101": "failing"}, "notes": []}
    assert row["labels_keep_eos"]["outcome"] == "passed"
    if SFT_OUTCOME == "passed":  # trl copies the tokenizer's pad onto the config, silently: TG102 fails the step
        assert row["sft_trainer"]["outcome"] == "failed" and row["sft_trainer"]["codes"].get("TG102") == "failing"
    else:
        assert row["sft_trainer"]["outcome"] == "skipped"
    assert row["save_and_reload"]["outcome"] == "failed"
    assert row["character_chat_moses"]["outcome"] == "skipped"
    assert "model:qwen3-misaligned  FAIL TG201!,TG206  FAIL TG101!" in output
    assert "TG201 error: model config pad None vs tokenizer pad 151643" in output


def test_user_checkpoint_aligned_passes(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    run = run_suite(tmp_path, "--tokenguard-model", str(checkpoints["aligned"]), "-rs")
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-4000:]
    assert ("6 passed, 1 skipped" if SFT_OUTCOME == "passed" else "5 passed, 2 skipped") in output
    assert "the character-chat scenario runs on the zoo's qwen3-0.6b layout" in output


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("missing", "{folder}: checkpoint folder does not exist"),
        ("no-config", "{folder}/config.json: missing"),
        ("no-weights", "{folder}: no weights"),
        ("adapter-only", "--tokenguard-adapter needs --tokenguard-model"),
        ("bad-adapter", "{folder}/adapter/adapter_config.json: missing"),
    ],
)
def test_bad_checkpoint_options_are_usage_errors(
    pytester: pytest.Pytester, checkpoints: dict[str, Path], setup: str, message: str
) -> None:
    folder = pytester.path / "ckpt"
    args = ["--tokenguard-model", str(folder)]
    if setup != "missing":
        folder.mkdir()
    if setup in ("no-weights", "bad-adapter"):
        for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"):
            (folder / name).write_bytes((checkpoints["aligned"] / name).read_bytes())
    if setup == "bad-adapter":
        (folder / "model.safetensors").write_bytes((checkpoints["aligned"] / "model.safetensors").read_bytes())
        (folder / "adapter").mkdir()
        args += ["--tokenguard-adapter", str(folder / "adapter")]
    if setup == "adapter-only":
        args = ["--tokenguard-adapter", str(folder)]
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*tokenguard: {message.format(folder=folder)}*"])


def _props(family: str, step: str, codes: str = "") -> list[tuple[str, object]]:
    props: list[tuple[str, object]] = [(SUITE_PROPERTY, f"{family}|{step}")]
    return [*props, (SUITE_CODES_PROPERTY, codes)] if codes else props


def _finding(code: str, expected: bool) -> RuntimeFinding:
    return RuntimeFinding(
        code=code, title="", message="m", logger="l", phase="call", channel="log", level="WARNING", fix="f", expected=expected
    )


def test_suite_table_merges_phases_and_marks_codes() -> None:
    table = SuiteTable()
    assert not table.add_report([("other", "x")], "passed", [])
    table.add_report(_props("qwen3-0.6b", "static_check", "TG201!,TG206"), "failed", [])
    table.add_report(_props("qwen3-0.6b", "lora_training"), "passed", [])
    table.add_report(_props("qwen3-0.6b", "lora_training"), "passed", [_finding("TG101", True)])
    table.add_report(_props("gpt2", "lora_training"), "failed", [_finding("TG101", False)])
    table.add_report(_props("gpt2", "lora_training"), "passed", [])  # teardown does not undo the failure
    lines = table.lines()
    assert lines[0] == "tokenguard suite: family x step"
    assert lines[1].split() == ["family", "static_check", "lora_training"]
    assert lines[2].split() == ["qwen3-0.6b", "FAIL", "TG201!,TG206", "ok", "TG101~"]
    assert lines[3].split() == ["gpt2", "-", "FAIL", "TG101!"]
    data: dict[str, Any] = table.to_json()
    assert data["gpt2"]["lora_training"] == {"outcome": "failed", "codes": {"TG101": "failing"}, "notes": []}


def test_zoo_fixtures_for_users(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_each(tokenguard_zoo):
            assert tokenguard_zoo.model.config.vocab_size == tokenguard_zoo.layout["model_config"]["vocab_size"]
            assert len(tokenguard_zoo.tokenizer) == tokenguard_zoo.layout["tokenizer"]["length"]

        def test_one(tokenguard_zoo_factory):
            first = tokenguard_zoo_factory("gpt2")
            first.tokenizer.pad_token = first.tokenizer.eos_token
            first.model.config.pad_token_id = 0
            second = tokenguard_zoo_factory("gpt2")
            assert second.tokenizer.pad_token is None and second.model.config.pad_token_id is None
        """
    )
    result = pytester.runpytest("-v")
    result.assert_outcomes(passed=len(zoo.families()) + 1)
    assert "test_each[qwen3-0.6b] PASSED" in result.stdout.str() and "test_each[gpt2] PASSED" in result.stdout.str()
