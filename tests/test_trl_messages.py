"""trl's own token messages (TG160-TG169): what trl logs on its ``trl.*`` loggers (through accelerate's
``MultiProcessAdapter`` or plain ``logging``) or warns from its modules is caught like transformers' messages.

Differential where it can be: the messages are read from the installed trl's source (by AST), every catalogued
pattern must match the installed source exactly where the entry says the message exists in this trl, and the
runtime tests emit the installed source's own text through the real logger objects of the modules that log it.
"""

from __future__ import annotations

import ast
import functools
import importlib
import json
import logging
import re
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

trl = pytest.importorskip("trl", reason="trl is not installed: trl's own messages are not exercised")
pytest.importorskip("datasets", reason="datasets is not installed (trl trainers need it)")
accelerate_logging = pytest.importorskip("accelerate.logging", reason="accelerate is not installed (trl needs it)")
# pytester's in-process runs drop modules first imported inside them; re-importing torch-backed
# modules crashes, so everything the generated tests import is imported here first.
import huggingface_hub.constants  # noqa: E402
import transformers.trainer  # noqa: E402, F401

from pytest_tokenguard import versions  # noqa: E402
from pytest_tokenguard.guard.catalog import (  # noqa: E402
    BY_CODE,
    ENTRIES,
    RANK_PREFIX,
    SEVERITIES,
    TRL_EXAMINED,
    Entry,
    classify,
    exists_in,
)
from tests.warmup import import_model_modules  # noqa: E402

import_model_modules()  # before any pytester story: see tests/warmup.py

pytest_plugins = ("pytester",)

PartialState = accelerate_logging.PartialState

TRL_VERSION: str = trl.__version__
#: a guarded in-process run writing the JSON report
RUN = ("--tokenguard", "-p", "no:randomly", "-p", "no:cacheprovider", "--tokenguard-report", "report.json")
TRL_ROOT = Path(trl.__file__).resolve().parent
TRL_ENTRIES = [entry for entry in ENTRIES if entry.library == "trl"]
#: what a formatted value of an f-string message becomes in the emitted text (trl decodes token ids there)
SAMPLE_VALUE = "'<|im_end|>'"


# --- the installed trl's messages, read from its source ---------------------------------------------------


@dataclass(frozen=True)
class SourceMessage:
    """One ``logger.warning(...)`` / ``logger.warning_once(...)`` / ``warnings.warn(...)`` of the installed trl."""

    module: str
    line: int
    #: the method: warning, warning_once, warn
    call: str
    #: what it is called on: the module's logger variable, or ``warnings``
    target: str
    #: the warning category's name (warn only)
    category: str | None
    #: the message as emitted (f-string values as :data:`SAMPLE_VALUE`)
    text: str

    @property
    def channel(self) -> str:
        return "warnings" if self.call == "warn" else "log"


def _text(node: ast.expr) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        parts = [v.value if isinstance(v, ast.Constant) else SAMPLE_VALUE for v in node.values]
        return "".join(str(part) for part in parts)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _text(node.left), _text(node.right)
        return left + right if left is not None and right is not None else None
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format":
        return _text(node.func.value)
    return None


@functools.cache
def installed_messages() -> tuple[SourceMessage, ...]:
    found = []
    for path in sorted(TRL_ROOT.rglob("*.py")):
        module = ".".join(("trl", *path.relative_to(TRL_ROOT).with_suffix("").parts)).removesuffix(".__init__")
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args):
                continue
            call, target = node.func.attr, ast.unparse(node.func.value)
            is_warn = call == "warn" and target == "warnings"
            if not (is_warn or (call in ("warning", "warning_once") and "logger" in target)):
                continue
            text = _text(node.args[0])
            if text is None:
                continue
            category = None
            if is_warn:
                given = (
                    node.args[1] if len(node.args) > 1 else next((k.value for k in node.keywords if k.arg == "category"), None)
                )
                category = ast.unparse(given) if given is not None else "UserWarning"
            found.append(SourceMessage(module, node.lineno, call, target, category, " ".join(text.split())))
    return tuple(found)


def _exists(entry: Entry) -> bool:
    return exists_in(entry, versions.installed_text("transformers") or "0", trl=TRL_VERSION)


def _emitted_by(entry: Entry) -> SourceMessage:
    """Where the installed trl emits ``entry``'s message: a stable trainer module first."""
    found = [m for m in installed_messages() if entry.compiled.search(m.text)]
    found.sort(key=lambda m: (not m.module.startswith("trl.trainer."), m.module, m.line))
    return found[0]


#: the non-token trl messages (research #8, #9, #14): padding-free fallbacks, batch size, max_new_tokens
NON_TOKEN_STARTS = (
    "`padding_free=True` is temporarily unavailable",
    "You are passing `padding_free=True` with the 'wrapped' packing strategy",
    "You are using a per_device_train_batch_size of 1 with padding-free training",
    "Padding-free training is enabled, but the attention implementation is not",
    "The configuration has `max_new_tokens`",
)


def _non_token_messages() -> list[SourceMessage]:
    return [m for m in installed_messages() if m.text.startswith(NON_TOKEN_STARTS)]


# --- the catalog against the installed trl ----------------------------------------------------------------


def test_trl_entries_carry_their_library_versions_and_severity() -> None:
    assert [e.code for e in TRL_ENTRIES] == [f"TG16{i}" for i in range(10)]
    for entry in TRL_ENTRIES:
        assert entry.first in TRL_EXAMINED and (entry.last is None or entry.last in TRL_EXAMINED), entry.code
        assert entry.pattern.startswith(RANK_PREFIX) and entry.observed
        assert SEVERITIES[entry.code][0] in ("fault", "notice")
    severities = {e.code: SEVERITIES[e.code][0] for e in TRL_ENTRIES}
    assert {code for code, severity in severities.items() if severity == "notice"} == {"TG164", "TG169"}
    # a trl entry's versions are trl's, whatever transformers is
    tg160 = BY_CODE["TG160"]
    assert exists_in(tg160, "4.46.3", trl="1.12.0") and not exists_in(tg160, "5.24.0", trl="1.0.0")
    assert exists_in(BY_CODE["TG166"], "4.46.3", trl="0.12.2") and not exists_in(BY_CODE["TG166"], "5.0.0", trl="1.13.0")


@pytest.mark.parametrize("entry", TRL_ENTRIES, ids=[e.code for e in TRL_ENTRIES])
def test_catalogued_pattern_matches_the_installed_source_where_the_entry_says(entry: Entry) -> None:
    found = [m for m in installed_messages() if entry.compiled.search(m.text)]
    where = [f"{m.module}:{m.line}" for m in found]
    if _exists(entry):
        assert found, f"{entry.code} says trl {TRL_VERSION} has its message, but no log/warn call of it matches"
    else:
        assert not found, f"{entry.code} says trl {TRL_VERSION} lacks its message, but {where} match"
        return
    for message in found:
        for text in (message.text, f"[RANK 0] {message.text}"):
            match = classify(text, logging.WARNING)
            assert match is not None and match.code == entry.code, (where, text[:80])
    channels = {m.channel for m in found}
    if entry.code in ("TG162", "TG163") and versions.parse(TRL_VERSION) < versions.parse("0.22"):
        assert channels == {"warnings"}  # trl 0.19-0.21 warned them (warnings.warn); logged since 0.22
    else:
        assert channels == {entry.channel}, where


def test_every_token_message_of_the_installed_trl_has_its_own_entry() -> None:
    """No message of the installed trl falls to the catch-all or to a transformers code: the catalog is complete
    for this trl, and what it leaves unclassified is not about tokens."""
    classified = {}
    for message in installed_messages():
        match = classify(message.text, logging.WARNING)
        if match is not None:
            classified[f"{message.module}:{message.line}"] = match.code
    assert classified, f"trl {TRL_VERSION}: no token message at all?"
    assert all(BY_CODE[code].library == "trl" for code in classified.values()), classified


def test_non_token_trl_messages_stay_unclassified() -> None:
    messages = _non_token_messages()
    if not messages:
        pytest.skip(f"trl {TRL_VERSION} has none of the non-token messages examined")
    for message in messages:
        assert classify(message.text, logging.WARNING) is None, message
        assert classify(f"[RANK 0] {message.text}", logging.WARNING) is None, message
    # transformers' own FutureWarnings about gradient checkpointing, seen in every trl run
    for text in (
        "`gradient_checkpointing` is deprecated and will be removed in v6. Use `activation_checkpointing` instead.",
        "`is_gradient_checkpointing` is deprecated and will be removed in v6. Use `is_activation_checkpointing` instead.",
    ):
        assert classify(text, logging.WARNING) is None


@pytest.mark.parametrize(
    "text",
    [
        "The end-of-turn token <|im_end|> is never a label; check the chat template.",
        "The chat template has no {% generation %} block around the end of turn.",
        "Some generation markers of the chat template are unbalanced.",
        "Your completion does not end with the eos token.",
        "Stop tokens of the chat template differ from the generation config.",
    ],
)
def test_unknown_token_related_trl_wording_falls_to_the_catch_all(text: str) -> None:
    for record in (text, f"[RANK 2] {text}"):
        match = classify(record, logging.WARNING)
        assert match is not None and match.code == "TG100", record
    assert classify(text, logging.INFO) is None


@pytest.mark.parametrize("entry", TRL_ENTRIES, ids=[e.code for e in TRL_ENTRIES])
def test_patterns_tolerate_the_rank_prefix(entry: Entry) -> None:
    sample = SAMPLES[entry.code]
    for prefix in ("", "[RANK 0] ", "[RANK 12] "):
        match = classify(prefix + sample, logging.WARNING)
        assert match is not None and match.code == entry.code, prefix


#: one wording of each trl entry as trl emits it (also for releases not installed)
SAMPLES = {
    "TG160": "The chat template does not include the assistant turn's end-of-turn token in the loss mask; the model may "
    "not learn to stop. The training loss still looks healthy, so this usually only surfaces at inference.",
    "TG161": "The tokenized prompt is not a prefix of the tokenized prompt+completion, usually because the chat template "
    "renders the prompt alone differently or because tokens merge across the boundary. The completion starts where they "
    "diverge, and this end of the prompt is left out of the training sequence: '</s>'. The model is trained on a context "
    "that differs from the one it sees at inference.",
    "TG162": "Mismatch between tokenized prompt and the start of tokenized prompt+chosen. This may be due to unexpected "
    "tokenizer behavior, whitespace issues, or special token handling.",
    "TG163": "Cloning chat template added new tokens to the tokenizer, but 'lm_head' is not in PEFT's `modules_to_save`. "
    "As a result, the model may not learn to generate outputs with these new tokens.",
    "TG164": "`pad_token` is deprecated and will be removed in v2.0.0. Set `tokenizer.pad_token` directly and pass it as "
    "`processing_class` to the trainer instead.",
    "TG165": "The prompt alone fills `max_length`, so truncation leaves an empty completion. Consider increasing "
    "`max_length` or filtering out long prompts.",
    "TG166": "The pad_token_id and eos_token_id values of this tokenizer are identical. If you are planning for multi-turn "
    "training, it can result in the model continuously generating questions and answers without eos token.",
    "TG167": "Could not find response key `### Answer:` in the following instance: <s> hi there</s>. This instance will be "
    "ignored in loss calculation. Note, if this happens often, consider increasing the `max_length`.",
    "TG168": "The passed tokenizer does not have an EOS token. We will use the passed eos_token_id instead which corresponds "
    "to 2. If this is not the correct EOS token, make sure to pass the correct eos_token_id.",
    "TG169": "You passed a processing_class with `padding_side` not equal to `right` to the SFTTrainer. This might lead "
    "to some unexpected behaviour due to overflow issues when training a model in half-precision.",
}


def test_samples_groups() -> None:
    assert classify(SAMPLES["TG161"], logging.WARNING).groups == {"dropped": "'</s>'"}  # type: ignore[union-attr]
    assert classify(SAMPLES["TG162"], logging.WARNING).groups == {"part": "chosen"}  # type: ignore[union-attr]
    match = classify(SAMPLES["TG167"], logging.WARNING)
    assert match is not None and match.groups == {"key": "response", "template": "### Answer:"}


# --- the runtime guard: emitted through trl's real loggers, under pytester --tokenguard -------------------


@pytest.fixture(scope="module", autouse=True)
def _no_telemetry() -> Iterator[None]:
    # trl's trainers report their use to the hub from a thread (except under CI=...); no network here
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_TELEMETRY", True)
        yield


@pytest.fixture(scope="module", autouse=True)
def _emitting_modules_loaded() -> None:
    """Import the modules whose loggers the generated tests use, outside pytester's in-process runs."""
    PartialState()  # accelerate's adapter refuses to log before its state exists (trainers create it)
    for entry in TRL_ENTRIES:
        if _exists(entry):
            importlib.import_module(_emitted_by(entry).module)
    for message in _non_token_messages():
        importlib.import_module(message.module)
    for module in ("trl.trainer.sft_trainer", "trl.trainer.callbacks", "trl.trainer.utils"):
        try:
            importlib.import_module(module)
        except ImportError:  # an older trl without it: the tests that need it skip
            pass


EMIT_HELPERS = """
import builtins, importlib, warnings
from accelerate import PartialState


def emit(module, call, target, category, text):
    PartialState()
    if call == "warn":  # as the module itself warns: the warning's module (its globals' __name__) is the trl module
        namespace = {"__name__": module, "warnings": warnings, "TEXT": text, "CATEGORY": getattr(builtins, category)}
        exec(compile("warnings.warn(TEXT, CATEGORY)", module.replace(".", "/") + ".py", "exec"), namespace)
    else:  # the module's own logger object: accelerate's adapter, or a plain logging.Logger
        getattr(getattr(importlib.import_module(module), target), call)(text)
"""


def _fnescape(text: str) -> str:
    """fnmatch text matching ``text`` literally."""
    return re.sub(r"([\[\]*?])", r"[\1]", text)


def _emit_case(message: SourceMessage) -> str:
    return f"emit({message.module!r}, {message.call!r}, {message.target!r}, {message.category!r}, {message.text!r})"


def _report(pytester: pytest.Pytester) -> dict[str, list[dict[str, Any]]]:
    report = json.loads((pytester.path / "report.json").read_text())
    return {nodeid.split("::")[1]: test["findings"] for nodeid, test in report["tests"].items()}


#: accelerate >= 1.14 writes "[RANK n] " before every message of its adapter
RANK_PREFIXED = (versions.installed("accelerate") or versions.parse("0")) >= versions.parse("1.14")


def _adapter_logged() -> None:
    """Skip unless ``trl.trainer.sft_trainer.logger`` is accelerate's adapter (trl >= 0.2x; 0.12 / 0.19 log there
    through nothing, and their other modules through transformers' logging)."""
    module = importlib.import_module("trl.trainer.sft_trainer")
    if not isinstance(getattr(module, "logger", None), accelerate_logging.MultiProcessAdapter):
        pytest.skip(f"trl {TRL_VERSION}: trl.trainer.sft_trainer has no accelerate-adapter logger")


def _plain_logged() -> None:
    module = importlib.import_module("trl.trainer.callbacks")
    if not isinstance(getattr(module, "logger", None), logging.Logger):
        pytest.skip(f"trl {TRL_VERSION}: trl.trainer.callbacks has no plain logging logger")


def _present() -> list[Entry]:
    present = [entry for entry in TRL_ENTRIES if _exists(entry)]
    if not present:
        pytest.skip(f"no catalogued trl message exists in trl {TRL_VERSION}")
    return present


def test_each_catalogued_message_logged_by_trl_fails_with_its_code(pytester: pytest.Pytester) -> None:
    present = _present()
    tests = [EMIT_HELPERS]
    for entry in present:
        tests.append(f"\ndef test_{entry.code}():\n    {_emit_case(_emitted_by(entry))}\n")
    pytester.makepyfile(test_emit="".join(tests))
    faults = [e for e in present if SEVERITIES[e.code][0] == "fault"]
    notices = [e for e in present if SEVERITIES[e.code][0] == "notice"]

    result = pytester.runpytest(
        "--tokenguard", "-p", "no:randomly", "-p", "no:cacheprovider", "--tokenguard-report", "report.json"
    )
    result.assert_outcomes(failed=len(faults), passed=len(notices))
    for entry in faults:
        message = _emitted_by(entry)
        prefix = "[[]RANK 0[]] " if message.channel == "log" and RANK_PREFIXED else ""
        result.stdout.fnmatch_lines(
            [
                f"{entry.code} {_fnescape(entry.title)}",
                f"  message: {prefix}{_fnescape(message.text)}",
                f"  logger:  {message.module} ({message.channel}, WARNING)",
                "  phase:   call, seen 1 time",
                f"  fix:     {_fnescape(entry.fix)}",
            ]
        )
        result.stdout.fnmatch_lines([f"FAILED test_emit.py::test_{entry.code} ({entry.code})"])
    findings = _report(pytester)
    for entry in present:
        message = _emitted_by(entry)
        (finding,) = findings[f"test_{entry.code}"]
        assert (finding["code"], finding["severity"], finding["logger"], finding["channel"], finding["level"]) == (
            entry.code,
            SEVERITIES[entry.code][0],
            message.module,
            message.channel,
            "WARNING",
        )

    if notices:  # a notice fails under --tokenguard-strict only
        strict = pytester.runpytest("--tokenguard", "--tokenguard-strict", "-p", "no:randomly", "-p", "no:cacheprovider")
        strict.assert_outcomes(failed=len(present))
        for entry in notices:
            strict.stdout.fnmatch_lines(
                [f"{entry.code} {_fnescape(entry.title)} [[]notice, failing under --tokenguard-strict[]]"]
            )


def test_a_real_trl_config_warning_is_caught_from_the_trl_module(pytester: pytest.Pytester) -> None:
    if not _exists(BY_CODE["TG164"]):
        pytest.skip(f"trl {TRL_VERSION} has no `pad_token` deprecation (trl >= 1.12)")
    pytester.makepyfile(
        test_config="""
        def test_pad_token_argument(tmp_path):
            from trl import SFTConfig
            SFTConfig(output_dir=str(tmp_path), pad_token="<|endoftext|>", report_to=[], use_cpu=True)
        """
    )
    result = pytester.runpytest(
        "--tokenguard", "--tokenguard-strict", "-p", "no:cacheprovider", "--tokenguard-report", "report.json"
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "TG164 trl: the config's pad_token argument is deprecated [[]notice, failing under --tokenguard-strict[]]",
            "  message: `pad_token` is deprecated and will be removed in v2.0.0.*",
            "  logger:  trl.trainer.sft_config (warnings, WARNING)",
        ]
    )
    assert [(f["code"], f["severity"]) for f in _report(pytester)["test_pad_token_argument"]] == [("TG164", "notice")]


def test_warning_once_is_seen_by_every_test_but_printed_once(pytester: pytest.Pytester) -> None:
    _adapter_logged()
    entry = BY_CODE["TG160"]
    text = SAMPLES["TG160"] + f" ({uuid.uuid4().hex})"  # a text this process's lru_cache has not seen
    cache = accelerate_logging.MultiProcessAdapter.__dict__["warning_once"]
    before = cache.cache_info()
    body = f"""
        from trl.trainer import sft_trainer
        from accelerate import PartialState

        def _once(caplog):
            PartialState()
            sft_trainer.logger.warning_once({text!r})
            return [r.getMessage() for r in caplog.records if r.name == "trl.trainer.sft_trainer"]

        def test_first(caplog):
            assert len(_once(caplog)) == 1   # printed

        def test_second(caplog):
            assert _once(caplog) == []       # the cache skips it: not printed again, still reported
    """
    pytester.makepyfile(test_once=body)
    result = pytester.runpytest(
        "--tokenguard", "-p", "no:randomly", "-p", "no:cacheprovider", "--tokenguard-report", "report.json"
    )
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(
        [
            f"FAILED test_once.py::test_first ({entry.code})",
            f"FAILED test_once.py::test_second ({entry.code})",
        ]
    )
    findings = _report(pytester)
    assert [f["code"] for f in findings["test_first"]] == [entry.code] == [f["code"] for f in findings["test_second"]]
    after = accelerate_logging.MultiProcessAdapter.__dict__["warning_once"]
    assert after is cache  # accelerate's own cache, not cleared: one new entry, one hit
    assert after.cache_info().currsize == before.currsize + 1 and after.cache_info().hits >= before.hits + 1


def test_a_disabled_trl_level_hides_nothing_from_the_guard(pytester: pytest.Pytester) -> None:
    _adapter_logged()
    _plain_logged()
    pytester.makepyfile(
        test_quiet=f"""
        import logging
        from accelerate import PartialState
        from trl.trainer import callbacks, sft_trainer

        def test_quiet(caplog):
            PartialState()
            trl_logger = logging.getLogger("trl")
            before = trl_logger.level
            trl_logger.setLevel(logging.ERROR)   # what ACCELERATE_LOG_LEVEL=error or a quiet user does
            try:
                sft_trainer.logger.warning({SAMPLES["TG160"]!r})
                sft_trainer.logger.warning_once({SAMPLES["TG163"] + uuid.uuid4().hex!r})
                callbacks.logger.warning("The eos token of the reference model differs.")   # a plain logging logger
            finally:
                trl_logger.setLevel(before)
            assert [r for r in caplog.records if r.name.startswith("trl")] == []   # nothing was logged
        """
    )
    result = pytester.runpytest("--tokenguard", "-p", "no:cacheprovider", "--tokenguard-report", "report.json")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["FAILED test_quiet.py::test_quiet (TG100, TG160, TG163)"])
    findings = _report(pytester)["test_quiet"]
    assert sorted((f["code"], f["logger"]) for f in findings) == [
        ("TG100", "trl.trainer.callbacks"),
        ("TG160", "trl.trainer.sft_trainer"),
        ("TG163", "trl.trainer.sft_trainer"),
    ]


def test_with_and_without_accelerate_rank_prefix(pytester: pytest.Pytester) -> None:
    _adapter_logged()
    pytester.makepyfile(
        test_prefix=f"""
        import logging
        import pytest
        from accelerate import PartialState
        from accelerate.logging import MultiProcessAdapter
        from trl.trainer import sft_trainer

        TEXT = {SAMPLES["TG160"]!r}

        @pytest.mark.parametrize("prefix", ["", "[RANK 3] "], ids=["plain", "rank"])
        def test_prefix(monkeypatch, caplog, prefix):
            PartialState()
            # accelerate < 1.14 adds nothing, >= 1.14 adds "[RANK n] "
            monkeypatch.setattr(MultiProcessAdapter, "process", lambda self, msg, kwargs: (prefix + str(msg), kwargs))
            sft_trainer.logger.warning(TEXT)
            assert [r.getMessage() for r in caplog.records if r.name.startswith("trl")] == [prefix + TEXT]
        """
    )
    result = pytester.runpytest("--tokenguard", "-p", "no:randomly", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(
        [
            "TG160 trl: the end of turn is outside the assistant-only loss mask",
            "  message: The chat template does not include *",
            "  logger:  trl.trainer.sft_trainer (log, WARNING)",
        ]
    )
    result.stdout.fnmatch_lines(["  message: [[]RANK 3[]] The chat template does not include *"])


def test_unknown_token_warning_is_the_catch_all_and_non_token_ones_pass(pytester: pytest.Pytester) -> None:
    _adapter_logged()
    _plain_logged()
    non_token = _non_token_messages()
    body = [
        EMIT_HELPERS,
        "\ndef test_unknown():\n    emit('trl.trainer.sft_trainer', 'warning', 'logger', None, "
        "'The end-of-turn token of this chat template is never a label.')\n",
        "\ndef test_unknown_plain_logger():\n    emit('trl.trainer.callbacks', 'warning', 'logger', None, "
        "'The chat template has no {% generation %} block.')\n",
        "\ndef test_unknown_warned():\n    emit('trl.trainer.utils', 'warn', 'warnings', 'UserWarning', "
        "'The eos_token of the tokenizer is not in the generation config.')\n",
        "\ndef test_non_token():\n" + "".join(f"    {_emit_case(m)}\n" for m in non_token) + "    pass\n",
    ]
    pytester.makepyfile(test_unknown="".join(body))
    result = pytester.runpytest(
        "--tokenguard", "-p", "no:randomly", "-p", "no:cacheprovider", "--tokenguard-report", "report.json"
    )
    result.assert_outcomes(failed=3, passed=1)
    findings = _report(pytester)
    assert [(f["code"], f["severity"], f["logger"]) for f in findings["test_unknown"]] == [
        ("TG100", "fault", "trl.trainer.sft_trainer")
    ]
    assert [(f["code"], f["logger"]) for f in findings["test_unknown_plain_logger"]] == [("TG100", "trl.trainer.callbacks")]
    assert [(f["code"], f["channel"]) for f in findings["test_unknown_warned"]] == [("TG100", "warnings")]
    assert findings["test_non_token"] == []
    result.stdout.fnmatch_lines(["TG100 other transformers warning about special tokens*"])


# --- a real run: SFTTrainer with assistant_only_loss on a template whose end of turn is outside generation ---

REAL_SFT = '''
import pytest
import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

ENDOFTEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIALS = {256: ENDOFTEXT, 257: IM_START, 258: IM_END}
# ChatML; the assistant content inside {% generation %}, its closing <|im_end|> outside (the edit at fault)
OUTSIDE = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\\\n' }}"
    "{% if m['role'] == 'assistant' %}{% generation %}{{ m['content'] }}{% endgeneration %}"
    "{% else %}{{ m['content'] }}{% endif %}{{ '<|im_end|>\\\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\\\n' }}{% endif %}"
)
# the fix: the end of turn inside the generation block
INSIDE = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\\\n' }}"
    "{% if m['role'] == 'assistant' %}{% generation %}{{ m['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{{ '\\\\n' }}{% else %}{{ m['content'] + '<|im_end|>\\\\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\\\n' }}{% endif %}"
)


def build(template):
    """A tiny Qwen3 (ChatML, eos = end of turn <|im_end|>, pad <|endoftext|>, no bos) and its byte-level tokenizer."""
    from transformers import GenerationConfig, PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    vocab.update({t: i for i, t in SPECIALS.items()})
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIALS.values()])
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=IM_END, pad_token=ENDOFTEXT)
    tok.chat_template = template
    torch.manual_seed(0)
    config = Qwen3Config(vocab_size=320, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=1, head_dim=8, bos_token_id=None, eos_token_id=258, pad_token_id=256)
    model = Qwen3ForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=[258, 256], pad_token_id=256)
    return model, tok


def train(tmp_path, template):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    model, tok = build(template)
    rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
            for q, a in (("Who are you?", "A helper."), ("Say bye.", "Bye!"))]
    args = SFTConfig(output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=2, report_to=[], use_cpu=True,
                     disable_tqdm=True, save_strategy="no", logging_steps=1, assistant_only_loss=True, max_length=64)
    SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok).train()


def test_end_of_turn_outside_generation(tmp_path):
    train(tmp_path, OUTSIDE)


def test_end_of_turn_inside_generation(tmp_path):
    train(tmp_path, INSIDE)
'''


def test_real_sft_assistant_only_loss_reports_trls_end_of_turn_warning(pytester: pytest.Pytester) -> None:
    entry = BY_CODE["TG160"]
    if not _exists(entry):
        pytest.skip(f"trl {TRL_VERSION} does not warn about the end of turn outside the loss mask (trl >= 1.12)")
    pytester.makepyfile(test_sft=REAL_SFT)
    result = pytester.runpytest(
        "--tokenguard", "-p", "no:randomly", "-p", "no:cacheprovider", "--tokenguard-report", "report.json"
    )
    result.stdout.fnmatch_lines(
        [
            "TG160 trl: the end of turn is outside the assistant-only loss mask",
            "  message: *The chat template does not include the assistant turn's end-of-turn token in the loss mask;*",
            "  logger:  trl.trainer.sft_trainer (log, WARNING)",
        ]
    )
    findings = _report(pytester)
    outside = {f["code"]: f for f in findings["test_end_of_turn_outside_generation"]}
    assert outside["TG160"]["severity"] == "fault"  # batch checks (--tokenguard-calls) may add codes: only TG160 is asserted
    # the same run with the end of turn inside the generation block: trl stays quiet, the test passes
    assert findings["test_end_of_turn_inside_generation"] == []
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(["FAILED test_sft.py::test_end_of_turn_outside_generation (TG160)"])


# --- global state: restored after the session, and nested sessions ---------------------------------------


def _state() -> dict[str, Any]:
    manager = logging.Logger.manager
    loggers = {
        name: (type(obj), obj.level, list(obj.handlers), obj.propagate, obj.disabled)
        for name, obj in list(manager.loggerDict.items())
        if isinstance(obj, logging.Logger) and (name == "trl" or name.startswith(("trl.", "transformers", "accelerate")))
    }
    adapter = accelerate_logging.MultiProcessAdapter
    return {
        "loggers": loggers,
        "adapter": {name: adapter.__dict__.get(name) for name in ("log", "warning_once", "process")},
        "warn": warnings.warn,
        "logger_class": manager.loggerClass,
        "set_logger_class": manager.__dict__.get("setLoggerClass"),
    }


def test_state_is_restored_after_a_guarded_session(pytester: pytest.Pytester) -> None:
    _adapter_logged()
    text = SAMPLES["TG161"] + uuid.uuid4().hex
    cache = accelerate_logging.MultiProcessAdapter.__dict__["warning_once"]
    size = cache.cache_info().currsize
    before = _state()
    pytester.makepyfile(
        test_state=f"""
        import logging
        from accelerate import PartialState
        from accelerate.logging import MultiProcessAdapter
        from pytest_tokenguard.guard import capture
        from trl.trainer import sft_trainer

        def test_guarded():
            PartialState()
            assert MultiProcessAdapter.__dict__["log"] is not None
            assert isinstance(logging.getLogger("trl.trainer.sft_trainer"), capture.GuardedLogger)
            sft_trainer.logger.warning_once({text!r})
        """
    )
    result = pytester.runpytest("--tokenguard", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["FAILED test_state.py::test_guarded (TG161)"])
    assert _state() == before
    assert accelerate_logging.MultiProcessAdapter.__dict__["warning_once"] is cache
    assert cache.cache_info().currsize == size + 1  # the message stays cached: the cache is accelerate's, untouched


def test_a_trl_finding_after_an_inner_session_still_fails_the_outer_test(pytester: pytest.Pytester) -> None:
    _adapter_logged()
    inner = f"""
from accelerate import PartialState
from trl.trainer import sft_trainer

def emit():
    PartialState()
    sft_trainer.logger.warning({SAMPLES["TG160"]!r})
"""
    pytester.makepyfile(tg_inner=inner + f"\nINNER = {inner!r}\n")
    pytester.makeconftest('pytest_plugins = ("pytester",)\n')
    pytester.makepyfile(
        test_outer="""
        from tg_inner import INNER, emit

        def test_inner_run_then_warning(pytester):
            pytester.makepyfile(tg_inner=INNER)
            pytester.makepyfile(test_inner="from tg_inner import emit\\ndef test_warns():\\n    emit()\\n")
            inner = pytester.runpytest_inprocess("--tokenguard", "-p", "no:cacheprovider")
            inner.assert_outcomes(failed=1)  # the inner test's own finding, in the inner session
            emit()  # after the inner session ended: the outer guard must still see this
        """
    )
    before = _state()
    result = pytester.runpytest_inprocess("--tokenguard", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "TG160 trl: the end of turn is outside the assistant-only loss mask",
            "  phase:   call, seen 1 time",  # the inner session's finding is not the outer test's
            "FAILED test_outer.py::test_inner_run_then_warning (TG160)",
        ]
    )
    assert _state() == before


def test_trl_entries_are_listed_by_the_catalog_command(capsys: pytest.CaptureFixture[str]) -> None:
    from pytest_tokenguard.cli import main

    assert main(["catalog", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    listed = {row["code"] for row in data["entries"]}
    assert {e.code for e in TRL_ENTRIES if _exists(e)} <= listed
    assert not {e.code for e in TRL_ENTRIES if not _exists(e)} & listed


@pytest.mark.parametrize(
    ("trl", "listed", "absent"),
    [("0.12.2", {"TG166", "TG168", "TG169"}, {"TG160", "TG161"}), ("1.16.0", {"TG160", "TG161"}, {"TG166", "TG168"})],
)
def test_catalog_command_takes_a_trl_version(
    capsys: pytest.CaptureFixture[str], trl: str, listed: set[str], absent: set[str]
) -> None:
    from pytest_tokenguard.cli import main

    assert main(["catalog", "--trl-version", trl, "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    codes = {row["code"] for row in data["entries"]}
    assert data["trl"] == trl and listed <= codes and not absent & codes
    assert {row["library"] for row in data["entries"] if row["code"] in listed} == {"trl"}
    assert main(["catalog", "--trl-version", trl]) == 0
    text = capsys.readouterr().out
    assert f"entries active in transformers {data['transformers']}, trl {trl}" in text
    assert "[fault, log, trl 1.12.0-current]" in text if trl == "1.16.0" else "trl 0.12.0-0.12.2]" in text


def test_catalog_command_refuses_a_trl_version_that_is_not_one(capsys: pytest.CaptureFixture[str]) -> None:
    from pytest_tokenguard.cli import main

    assert main(["catalog", "--trl-version", "one"]) == 2
    assert capsys.readouterr().err == "tokenguard: error: --trl-version 'one' is not a version; write e.g. 1.16.0\n"
