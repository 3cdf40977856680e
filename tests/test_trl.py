"""User stories for trl (TG102): SFTTrainer copies the tokenizer's pad onto the model configs while it is built,
silently, so Trainer.train() has nothing left to align and logs no TG101. --tokenguard fails those tests anyway."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("trl", reason="trl is not installed: the TG102 checks of trl trainers are not exercised")
pytest.importorskip("datasets", reason="datasets is not installed (trl trainers need it)")
pytest.importorskip("peft", reason="peft is not installed (the LoRA case needs it)")
# pytester's in-process runs drop modules first imported inside them; re-importing torch-backed
# modules crashes, so everything the generated tests import is imported here first.
import huggingface_hub.constants
import peft
import transformers.trainer  # noqa: F401
import trl
from trl.trainer.sft_trainer import SFTTrainer

from pytest_tokenguard import versions
from pytest_tokenguard.guard import calls
from pytest_tokenguard.static.alignment import predict_trainer_alignment
from pytest_tokenguard.suite import support, zoo

pytest_plugins = ("pytester",)

Dataset = pytest.importorskip("datasets").Dataset  # here: datasets ships no type information

# trl < 1.13 leaves the model configs alone (Trainer.train() aligns and logs TG101 itself)
if versions.parse(trl.__version__) < versions.parse("1.13"):
    pytest.skip(f"trl {trl.__version__} does not rewrite special tokens in __init__ (trl >= 1.13 does)", allow_module_level=True)

FIX = "align the model config and generation config with the tokenizer before building the trl trainer"

# The user's tests, as written.
SFT_TESTS = """
from datasets import Dataset
from pytest_tokenguard import zoo

MESSAGES = [{"messages": [{"role": "user", "content": "hi there"}, {"role": "assistant", "content": "hello friend"}]}] * 4


def _args(tmp_path, **kw):
    from trl import SFTConfig
    return SFTConfig(output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=2, report_to=[], use_cpu=True,
                     disable_tqdm=True, save_strategy="no", logging_steps=1, max_length=32, **kw)


def test_sft_messages_misaligned(tmp_path):
    from trl import SFTTrainer
    model, tok = zoo.build("qwen3-0.6b")
    SFTTrainer(model=model, args=_args(tmp_path), train_dataset=Dataset.from_list(MESSAGES), processing_class=tok).train()


def test_sft_text_misaligned(tmp_path):
    from trl import SFTTrainer
    model, tok = zoo.build("qwen3-0.6b")
    ds = Dataset.from_list([{"text": "hello world this is text"}] * 4)
    SFTTrainer(model=model, args=_args(tmp_path), train_dataset=ds, processing_class=tok).train()


def test_sft_aligned(tmp_path):
    from trl import SFTTrainer
    model, tok = zoo.build("qwen3-0.6b")
    model.config.pad_token_id = model.generation_config.pad_token_id = tok.pad_token_id
    SFTTrainer(model=model, args=_args(tmp_path), train_dataset=Dataset.from_list(MESSAGES), processing_class=tok).train()


def test_sft_lora_peft_config(tmp_path):
    from peft import LoraConfig
    from trl import SFTTrainer
    model, tok = zoo.build("qwen3-0.6b")
    SFTTrainer(model=model, args=_args(tmp_path), train_dataset=Dataset.from_list(MESSAGES), processing_class=tok,
               peft_config=LoraConfig(r=2, target_modules="all-linear", task_type="CAUSAL_LM")).train()
"""

MISALIGNED = ("test_sft_messages_misaligned", "test_sft_text_misaligned", "test_sft_lora_peft_config")


def _sft_args(output_dir: Any) -> Any:
    return support.sft_config(output_dir, max_length=32)


@pytest.fixture(scope="module", autouse=True)
def _no_telemetry() -> Iterator[None]:
    # trl's trainers report their use to the hub from a thread (except under CI=...); no network here
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_TELEMETRY", True)
        yield


@pytest.fixture(scope="module")
def after_trl(tmp_path_factory: pytest.TempPathFactory, _no_telemetry: None) -> dict[str, Any]:
    """Train once outside pytester (SFTTrainer with LoRA on messages, SFTTrainer on text, a plain Trainer) so the
    modules they import lazily are loaded before the in-process runs; return what the installed Trainer.train()
    still aligns after trl's rewrite (the TG101 a trl run gets besides TG102: ``{}`` on transformers 5.18+,
    ``{'bos_token_id': None}`` for Qwen3 on 4.56-5.17, which write the tokenizer's None over the config bos)."""
    model, tok = zoo.build("qwen3-0.6b")
    rows = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}] * 2
    lora = peft.LoraConfig(r=2, target_modules="all-linear", task_type="CAUSAL_LM")
    train = Dataset.from_list(rows)
    SFTTrainer(
        model=model, args=_sft_args(tmp_path_factory.mktemp("warm")), train_dataset=train, processing_class=tok, peft_config=lora
    ).train()
    model, tok = zoo.build("qwen3-0.6b")
    text = Dataset.from_list([{"text": "hello world"}] * 2)
    SFTTrainer(model=model, args=_sft_args(tmp_path_factory.mktemp("warm")), train_dataset=text, processing_class=tok).train()
    model, tok = zoo.build("qwen3-0.6b")
    zoo.lora_train(model, tok, tmp_path_factory.mktemp("warm"), steps=1)
    model, tok = zoo.build("qwen3-0.6b")
    model.config.pad_token_id = model.generation_config.pad_token_id = tok.pad_token_id
    return predict_trainer_alignment(model, tok)


def _findings(pytester: pytest.Pytester) -> dict[str, list[dict[str, Any]]]:
    report = json.loads((pytester.path / "report.json").read_text())
    return {nodeid.split("::")[1]: test["findings"] for nodeid, test in report["tests"].items()}


def test_sft_trainer_rewrite_fails_like_the_trainer_would(pytester: pytest.Pytester, after_trl: dict[str, Any]) -> None:
    pytester.makepyfile(test_sft=SFT_TESTS)
    result = pytester.runpytest("--tokenguard", "-p", "no:randomly", "--tokenguard-report", "report.json")
    # 5.18+: failed=3, passed=1. On 4.56-5.17 the Trainer still writes None over Qwen3's bos (TG101), aligned or not.
    result.assert_outcomes(failed=3 + bool(after_trl), passed=1 - bool(after_trl))
    result.stdout.fnmatch_lines(
        [
            "TG102 trl trainer rewrote special tokens",
            "  message: SFTTrainer.__init__ rewrote special tokens: {'pad_token_id': 151643}",
            "  logger:  pytest_tokenguard.trl (synthesized, WARNING)",
            "  phase:   call, seen 1 time",
            f"  fix:     {FIX}*",  # findings.py may add the assignment lines after a ':'
        ]
    )
    if not after_trl:  # the tokenguard summary section
        result.stdout.fnmatch_lines(
            [
                "tokenguard: 3 findings in 4 guarded tests (TG102 x3); 0 allowed, 0 expected, 3 failing tests",
                *(f"FAILED test_sft.py::{name} (TG102)" for name in sorted(MISALIGNED)),
            ]
        )
    findings = _findings(pytester)
    for name in MISALIGNED:
        tg102 = findings[name][0]
        assert [f["code"] for f in findings[name]] == ["TG102"] + (["TG101"] if after_trl else [])  # one each, no double
        assert tg102["details"] == {"updated_tokens": {"pad_token_id": 151643}, "trainer": "SFTTrainer"}
        assert (tg102["channel"], tg102["severity"], tg102["allowed"], tg102["expected"]) == (
            "synthesized",
            "fault",
            False,
            False,
        )
    assert [f["code"] for f in findings.get("test_sft_aligned", [])] == (["TG101"] if after_trl else [])
    if after_trl:
        assert findings["test_sft_aligned"][0]["details"]["updated_tokens"] == after_trl


def test_allow_marker_and_expect_cover_tg102(pytester: pytest.Pytester, after_trl: dict[str, Any]) -> None:
    codes = ["TG102", *(["TG101"] if after_trl else [])]  # TG101: what 4.56-5.17 still align (Qwen3's bos)
    quoted = ", ".join(repr(code) for code in codes)
    pytester.makepyfile(
        test_allowed=SFT_TESTS.replace(
            "\ndef test_sft_", f'\n@pytest.mark.tokenguard_allow({quoted}, reason="trl aligns the pad on purpose")\ndef test_sft_'
        )
        .replace("def test_sft_aligned", "def _aligned")
        .replace("from datasets import Dataset", "import pytest\nfrom datasets import Dataset"),
        test_expected=f"""
        from datasets import Dataset
        from peft import LoraConfig
        from pytest_tokenguard import zoo
        from trl import SFTConfig, SFTTrainer

        def test_sft_expected(tmp_path, tokenguard):
            model, tok = zoo.build("qwen3-0.6b")
            args = SFTConfig(output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=2, report_to=[],
                             use_cpu=True, disable_tqdm=True, save_strategy="no", max_length=32)
            with tokenguard.expect({quoted}):
                SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list([{{"text": "hello world"}}] * 4),
                           processing_class=tok,
                           peft_config=LoraConfig(r=2, target_modules="all-linear", task_type="CAUSAL_LM")).train()
            tokenguard.assert_clean()
        """,
    )
    result = pytester.runpytest("--tokenguard", "-p", "no:randomly", "--tokenguard-report", "report.json")
    result.assert_outcomes(passed=4)
    result.stdout.no_fnmatch_line("*TokenguardStaleAllowWarning*")
    findings = _findings(pytester)
    assert [(f["code"], f["allowed"]) for f in findings["test_sft_messages_misaligned"]] == [(code, True) for code in codes]
    assert [(f["code"], f["expected"]) for f in findings["test_sft_expected"]] == [(code, True) for code in codes]


TRAINER_TESTS = """
from pytest_tokenguard import zoo


def test_trainer_misaligned(tmp_path):
    model, tok = zoo.build("qwen3-0.6b")
    zoo.lora_train(model, tok, tmp_path, steps=1, lora=False)


def test_trainer_lora_misaligned(tmp_path):
    model, tok = zoo.build("qwen3-0.6b")
    zoo.lora_train(model, tok, tmp_path, steps=1)


def test_trainer_aligned(tmp_path):
    model, tok = zoo.build("qwen3-0.6b")
    model.config.pad_token_id = model.generation_config.pad_token_id = tok.pad_token_id
    zoo.lora_train(model, tok, tmp_path, steps=1)
"""


def test_plain_trainer_still_gives_tg101(pytester: pytest.Pytester, after_trl: dict[str, Any]) -> None:
    # the same models under transformers.Trainer: the Trainer aligns and logs TG101 itself (no TG102: no trl)
    pytester.makepyfile(test_trainer=TRAINER_TESTS)
    result = pytester.runpytest("--tokenguard", "-p", "no:randomly", "--tokenguard-report", "report.json")
    result.assert_outcomes(failed=2 + bool(after_trl), passed=1 - bool(after_trl))
    findings = _findings(pytester)
    model, tok = zoo.build("qwen3-0.6b")
    raw = predict_trainer_alignment(model, tok)
    assert raw.get("pad_token_id") == 151643
    for name in ("test_trainer_misaligned", "test_trainer_lora_misaligned"):
        assert [f["code"] for f in findings[name]] == ["TG101"]
        assert findings[name][0]["details"]["updated_tokens"] == raw


def test_wrappers_exist_only_while_the_guard_is_on(pytester: pytest.Pytester, after_trl: dict[str, Any]) -> None:
    init = SFTTrainer.__dict__["__init__"]
    original = getattr(init, "__tokenguard_original__", init)  # wrapped already when an outer guard is attached
    pytester.makepyfile(
        """
        from pytest_tokenguard.guard import calls
        from trl.trainer.sft_trainer import SFTTrainer

        def test_wrapped():
            assert SFTTrainer.__dict__["__init__"].__tokenguard_original__ is not None
            assert "SFTTrainer" in calls.installed_trl_wrappers()
        """
    )
    # a guarded test earlier in this run may have attached the guard of this (outer) session for the rest of the run
    outer_guard = bool(calls._installation.users)
    pytester.runpytest("--tokenguard").assert_outcomes(passed=1)
    if outer_guard:  # reference counting: the inner session's end leaves the outer session's wrappers in place
        assert SFTTrainer.__dict__["__init__"].__tokenguard_original__ is original
    else:
        assert SFTTrainer.__dict__["__init__"] is original
        assert calls.installed_trl_wrappers() == []
        pytester.runpytest().assert_outcomes(failed=1)  # no guard, no wrapper


def _subprocess(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # the source tree first, so this checkout (not an older installed wheel) is what runs
    root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), root, os.environ.get("PYTHONPATH", "")]))
    env["HF_HUB_DISABLE_TELEMETRY"] = "1"
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist", "-p", "no:randomly", *args]
    return subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=900)


def test_a_run_that_never_imports_trl_does_not_import_it(tmp_path: Path) -> None:
    (tmp_path / "probe_plugin.py").write_text(
        "import json, sys\n\n"
        "def pytest_unconfigure(config):\n"
        "    names = [m for m in sys.modules if m == 'trl' or m.startswith(('trl.', 'pytest_tokenguard.guard.'))]\n"
        "    with open('modules.json', 'w') as handle:\n"
        "        json.dump(sorted(names), handle)\n"
    )
    (tmp_path / "test_plain_trainer.py").write_text(
        "import sys\n"
        "import transformers.trainer\n"
        "from pytest_tokenguard.guard import routing\n\n"
        "def test_guarded_without_trl():\n"
        "    assert routing.current is not None\n"
        "    assert 'trl' not in sys.modules\n"
    )
    run = _subprocess(tmp_path, "-p", "probe_plugin", "--tokenguard")
    assert run.returncode == 0, run.stdout + run.stderr
    loaded = json.loads((tmp_path / "modules.json").read_text())
    assert "pytest_tokenguard.guard.calls" in loaded  # the guard was attached
    assert [m for m in loaded if m == "trl" or m.startswith("trl.") or m == "pytest_tokenguard.guard.trl"] == []


def test_a_fresh_run_that_imports_trl_in_the_test_module_is_guarded(tmp_path: Path) -> None:
    # no warm-up, no pytester: trl is first imported inside the first test, while the guard is attached
    (tmp_path / "test_sft_fresh.py").write_text(
        SFT_TESTS.split("def test_sft_text_misaligned")[0]
        + "def test_wrapped():\n"
        + "    from pytest_tokenguard.guard import calls\n"
        + "    assert 'SFTTrainer' in calls.installed_trl_wrappers()\n"
    )
    run = _subprocess(tmp_path, "--tokenguard")
    assert run.returncode == 1, run.stdout + run.stderr
    assert "1 failed, 1 passed" in run.stdout
    assert "  message: SFTTrainer.__init__ rewrote special tokens: {'pad_token_id': 151643}" in run.stdout
