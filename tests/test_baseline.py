"""--tokenguard-baseline: record, compare (diff), update, stale, missing and corrupt baselines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

# pytester's in-process runs drop modules first imported inside them, and torch-backed modules cannot be
# imported twice, so what the generated tests import is imported here first.
import transformers.testing_utils  # noqa: F401

from pytest_tokenguard.guard import baseline
from pytest_tokenguard.suite import zoo

pytest_plugins = ("pytester",)

# What the generated tests do is read from behaviour.json, so a later run can "upgrade" transformers.
TESTS = """
import json
from pathlib import Path
from transformers.utils import logging as hf_logging

TG101 = ("The tokenizer has new PAD/BOS/EOS tokens that differ from the model config and generation config. "
         "The model config and generation config were aligned accordingly, being updated with the tokenizer's "
         "values. Updated tokens: {}.")

def behaviour():
    return json.loads(Path(__file__).with_name("behaviour.json").read_text())

def test_training(tokenguard):
    updated = behaviour()["updated"]
    if updated:
        with tokenguard.expect("TG101"):
            hf_logging.get_logger("transformers.trainer_utils").warning(TG101.format(updated))

def test_saved_ids(tokenguard):
    tokenguard.observe("saved_ids", {"config.json": {"bos": behaviour()["bos"], "pad": 151643}})

def test_without_fixture():
    pass
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(test_upgrade=TESTS)
    set_behaviour(pytester, updated={"pad_token_id": 151643}, bos=151643)
    return pytester


def set_behaviour(pytester: pytest.Pytester, **values: object) -> None:
    (pytester.path / "behaviour.json").write_text(json.dumps(values))


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("--tokenguard-baseline", "baseline.json", *args)


def test_record_then_compare_unchanged(project: pytest.Pytester) -> None:
    first = run(project)
    first.assert_outcomes(passed=3)
    first.stdout.fnmatch_lines(["tokenguard baseline: recorded baseline.json (2 tests from this run, 0 kept, 0 stale removed)"])
    text = (project.path / "baseline.json").read_text()
    data = json.loads(text)
    assert text == json.dumps(data, indent=2, sort_keys=True) + "\n", "stable: sorted keys, one layout"
    assert "time" not in text.lower()
    entry = data["tests"]["test_upgrade.py::test_training"]
    assert entry["observed"] == {"codes": {"TG101": 1}, "trainer_updates": [{"pad_token_id": 151643}]}
    assert set(entry["versions"]) == {"transformers", "peft", "torch"}
    assert "test_upgrade.py::test_without_fixture" not in data["tests"]

    again = run(project)
    again.assert_outcomes(passed=3)
    again.stdout.fnmatch_lines(["tokenguard baseline: compared 2 tests with baseline.json"])
    assert (project.path / "baseline.json").read_text() == text, "comparing never rewrites"


def test_changed_behaviour_fails_with_a_readable_diff(project: pytest.Pytester) -> None:
    run(project).assert_outcomes(passed=3)
    # an "upgrade": the Trainer now also writes None over bos, and the saved config lost its bos
    set_behaviour(project, updated={"bos_token_id": None, "pad_token_id": 151643}, bos=None)
    result = run(project)
    result.assert_outcomes(failed=2, passed=1)
    result.stdout.fnmatch_lines(
        [
            "tokenguard baseline: token behaviour changed since baseline.json",
            "  test: test_upgrade.py::test_training",
            "  old versions: transformers *, peft *, torch *",
            "  new versions: transformers *, peft *, torch *",
            "  field trainer_updates:",
            '    old: [{"pad_token_id": 151643}]',
            '    new: [{"bos_token_id": null, "pad_token_id": 151643}]',
            "accept the new behaviour with --tokenguard-update-baseline once it is intended",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "  field saved_ids.config.json.bos:",
            "    old: 151643",
            "    new: null",
        ]
    )


def test_versions_in_the_diff_come_from_the_baseline(project: pytest.Pytester) -> None:
    run(project).assert_outcomes(passed=3)
    data = json.loads((project.path / "baseline.json").read_text())
    for entry in data["tests"].values():  # as if recorded under an older transformers
        entry["versions"]["transformers"] = "4.57.6"
    (project.path / "baseline.json").write_text(json.dumps(data))
    set_behaviour(project, updated={}, bos=151643)
    result = run(project)
    result.assert_outcomes(failed=1, passed=2)
    result.stdout.fnmatch_lines(
        [
            "  old versions: transformers 4.57.6, *",
            "  field codes.TG101:",
            "    old: 1",
            '    new: "(absent)"',
        ]
    )


def test_update_rewrites_and_missing_entries_fail(project: pytest.Pytester) -> None:
    run(project).assert_outcomes(passed=3)
    data = json.loads((project.path / "baseline.json").read_text())
    del data["tests"]["test_upgrade.py::test_saved_ids"]
    (project.path / "baseline.json").write_text(json.dumps(data))
    missing = run(project)
    missing.assert_outcomes(failed=1, passed=2)
    missing.stdout.fnmatch_lines(["*test_upgrade.py::test_saved_ids has no entry in baseline.json*"])

    set_behaviour(project, updated={"bos_token_id": None}, bos=None)
    updated = run(project, "--tokenguard-update-baseline")
    updated.assert_outcomes(passed=3)
    updated.stdout.fnmatch_lines(["tokenguard baseline: updated baseline.json (2 tests from this run, 0 kept, 0 stale removed)"])
    run(project).assert_outcomes(passed=3)


def test_stale_entries_are_reported_and_fail_when_strict(project: pytest.Pytester) -> None:
    run(project).assert_outcomes(passed=3)
    data = json.loads((project.path / "baseline.json").read_text())
    data["tests"]["test_upgrade.py::test_removed_long_ago"] = {"observed": {"codes": {}}, "versions": {}}
    data["tests"]["test_other_module.py::test_not_collected_here"] = {"observed": {"codes": {}}, "versions": {}}
    (project.path / "baseline.json").write_text(json.dumps(data))
    result = run(project)
    result.assert_outcomes(passed=3)
    assert result.ret == 0
    result.stdout.fnmatch_lines(
        [
            "tokenguard baseline: 1 entry for tests that no longer exist (remove with --tokenguard-update-baseline):",
            "  test_upgrade.py::test_removed_long_ago",
        ]
    )
    assert run(project, "--tokenguard-baseline-strict").ret == pytest.ExitCode.TESTS_FAILED
    deselected = run(project, "-k", "training")  # a deselected test is not stale
    deselected.stdout.no_fnmatch_line("*test_saved_ids*")
    run(project, "--tokenguard-update-baseline").assert_outcomes(passed=3)
    kept = json.loads((project.path / "baseline.json").read_text())["tests"]
    assert "test_upgrade.py::test_removed_long_ago" not in kept
    assert "test_other_module.py::test_not_collected_here" in kept, "entries of modules not run are kept"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "corrupt baseline, malformed JSON at line 1 column 2"),
        ("[]", "not a tokenguard baseline"),
        ('{"schema": 1, "tests": {"t": {"codes": {}}}}', "entry 't' has no \"observed\" object"),
    ],
)
def test_corrupt_baseline_is_a_usage_error_and_never_overwritten(project: pytest.Pytester, content: str, message: str) -> None:
    (project.path / "baseline.json").write_text(content)
    for args in ((), ("--tokenguard-update-baseline",)):
        result = run(project, *args)
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines([f"*baseline.json: {message}*"])
        assert (project.path / "baseline.json").read_text() == content


def test_update_needs_a_path(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest("--tokenguard-update-baseline")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--tokenguard-update-baseline*need --tokenguard-baseline PATH*"])


def test_snapshot_and_check_add_layouts(pytester: pytest.Pytester) -> None:
    zoo.build("tinyllama-1.1b-chat-v1.0")  # import the model's modules outside pytester
    pytester.makepyfile(
        """
        from pytest_tokenguard.suite import zoo

        def test_layout(tokenguard):
            model, tokenizer = zoo.build("tinyllama-1.1b-chat-v1.0")
            tokenguard.snapshot(model, tokenizer)
        """
    )
    pytester.runpytest("--tokenguard-baseline", "b.json").assert_outcomes(passed=1)
    (entry,) = json.loads((pytester.path / "b.json").read_text())["tests"].values()
    snapshot = entry["observed"]["snapshots"]["default"]
    assert snapshot["model_config"] == {"bos": 1, "eos": 2, "pad": None}
    assert snapshot["tokenizer"] == {"bos": 1, "eos": 2, "pad": 2}
    assert snapshot["strings"]["2"] == "</s>" and snapshot["end_of_turn"] == ["</s>", 2]
    assert snapshot["findings"] == [
        "TG201 pad error",
        "TG203 pad error",
        "TG206 pad error",
        "TG215 bos warning",
    ]  # pad = eos = end of turn, the only stop; the zoo's stand-in tokenizer adds no bos (expected.py says why)


def test_differences_flatten_nested_objects() -> None:
    diffs = baseline.differences({"a": {"b": 1, "c": [1, 2]}, "gone": 1}, {"a": {"b": 2, "c": [1, 2]}, "new": (1,)})
    assert [(d.field, d.old, d.new) for d in diffs] == [("a.b", 1, 2), ("gone", 1, "(absent)"), ("new", "(absent)", [1])]


def test_save_is_atomic_and_sorted(tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    baseline.save(path, {"z": {"observed": {}}, "a": {"observed": {"k": 1}}})
    assert list(json.loads(path.read_text())["tests"]) == ["a", "z"]
    assert [p.name for p in tmp_path.iterdir()] == ["b.json"]
    assert baseline.load(path) == {"a": {"observed": {"k": 1}}, "z": {"observed": {}}}
