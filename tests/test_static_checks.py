"""Static checks (TG2xx): real layouts give exactly their documented findings; every code on hand-made layouts."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pytest_tokenguard import (
    Report,
    TokenAlignmentError,
    assert_special_tokens_aligned,
    check_special_tokens,
)
from pytest_tokenguard.static.checks import STATIC_CODES, check_layout
from pytest_tokenguard.static.layout import TokenLayout
from pytest_tokenguard.suite import zoo
from pytest_tokenguard.suite.expected import EXPECTED


@pytest.fixture(scope="module")
def built() -> dict[str, tuple[Any, Any]]:
    return {name: zoo.build(name) for name in zoo.layouts()}


def test_every_family_has_an_expectation() -> None:
    assert set(EXPECTED) == set(zoo.layouts())


@pytest.mark.parametrize("family", sorted(EXPECTED))
def test_real_layout_gives_exactly_its_documented_findings(family: str, built: dict[str, tuple[Any, Any]]) -> None:
    model, tokenizer = built[family]
    report = check_special_tokens(model, tokenizer)
    found = {(f.code, f.field, f.severity) for f in report.findings}
    expected = EXPECTED[family]
    assert found == expected["findings"], str(report)
    documented = zoo.layout(family)["documented_findings"]
    mapping: dict[int, set[tuple[str, str, str]]] = expected["documented"]  # type: ignore[assignment]
    assert sorted(mapping) == list(range(len(documented))), "every documented finding is mapped"
    covered = set().union(*mapping.values()) | set(expected["undocumented"])  # type: ignore[call-overload]
    assert covered == found, "every finding is documented or explained"
    assert len(report.findings) == len(found), "one finding per (code, field)"


def test_qwen3_pad_trap_values(built: dict[str, tuple[Any, Any]]) -> None:
    model, tokenizer = built["qwen3-0.6b"]
    (pad,) = [f for f in check_special_tokens(model, tokenizer).findings if f.code == "TG201" and f.field == "pad"]
    assert pad.values == {"model": None, "tokenizer": 151643}
    assert "151643" in pad.hint and pad.severity == "error"


def test_qwen3_with_only_config_pad_aligned_has_no_error() -> None:
    model, tokenizer = zoo.build("qwen3-0.6b")
    model.config.pad_token_id = tokenizer.pad_token_id
    report = check_special_tokens(model, tokenizer)
    assert report.ok and not report.errors
    # 151643 <|endoftext|> in the generation eos is a declared special token: a deliberate stop id, no TG202
    assert {f.code for f in report.warnings} == {"TG201", "TG206"}


def test_peft_model_is_checked_through_its_base() -> None:
    from peft import LoraConfig, get_peft_model

    model, tokenizer = zoo.build("tinyllama-1.1b-chat-v1.0")
    base_report = check_special_tokens(model, tokenizer)
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    assert check_special_tokens(peft_model, tokenizer).to_dict() == base_report.to_dict()


def test_config_alone_and_processor_carrying_a_tokenizer(built: dict[str, tuple[Any, Any]]) -> None:
    model, tokenizer = built["tinyllama-1.1b-chat-v1.0"]

    class Processor:  # what ProcessorMixin exposes: the tokenizer as an attribute
        def __init__(self, tok: object) -> None:
            self.tokenizer = tok

    from_config = check_special_tokens(model.config, Processor(tokenizer), model.generation_config)
    # TG215: the zoo's stand-in tokenizer adds no bos (suite/expected.py)
    assert {(f.code, f.field) for f in from_config.findings} == {
        ("TG201", "pad"),
        ("TG203", "pad"),
        ("TG206", "pad"),
        ("TG215", "bos"),
    }
    assert from_config.layout.embedding_rows is None and from_config.layout.rows == 32000


def test_explicit_generation_config_replaces_the_models(built: dict[str, tuple[Any, Any]]) -> None:
    from transformers import GenerationConfig

    model, tokenizer = built["qwen3-0.6b"]
    # the character-chat app: ids copied from the base model config
    app = GenerationConfig(
        max_new_tokens=50,
        do_sample=True,
        bos_token_id=model.config.bos_token_id,
        pad_token_id=model.config.pad_token_id,
        eos_token_id=model.config.eos_token_id,
    )
    codes = {(f.code, f.field, f.severity) for f in check_special_tokens(model, tokenizer, app).findings}
    assert ("TG203", "pad", "error") in codes  # generation pad None where the tokenizer pads with 151643


def test_report_table_json_and_str(built: dict[str, tuple[Any, Any]]) -> None:
    model, tokenizer = built["qwen3-0.6b"]
    report = check_special_tokens(model, tokenizer)
    text = str(report)
    for heading in (
        "model config",
        "generation config",
        "tokenizer",
        "chat end of turn: 151645 '<|im_end|>'",
        "embedding rows 151936",
        "tokenizer length 151669",
    ):
        assert heading in text
    assert "pad  None" in text and "151643 '<|endoftext|>'" in text
    data = json.loads(json.dumps(report.to_dict()))
    assert data["ok"] is False and {f["code"] for f in data["findings"]} == {"TG201", "TG206"}
    assert all(set(f) == {"code", "severity", "field", "values", "message", "hint"} for f in data["findings"])
    assert len(report.errors) == 1 and len(report.warnings) == 2


def test_assertion_message_is_table_plus_findings(built: dict[str, tuple[Any, Any]]) -> None:
    model, tokenizer = built["tinyllama-1.1b-chat-v1.0"]
    with pytest.raises(TokenAlignmentError) as info:
        assert_special_tokens_aligned(model, tokenizer)
    assert isinstance(info.value, AssertionError)
    message = str(info.value)
    # pad = eos = the chat end of turn </s> is the only stop id: an error, besides the config pad
    assert message.startswith("special tokens are not aligned: TG201, TG203, TG206")
    assert "generation config" in message and "model.config.pad_token_id = 2" in message
    assert "TG206 error" in message and "nothing else can end a turn" in message
    assert_special_tokens_aligned(model, tokenizer, allow=["TG201", "TG203", "TG206"])
    with pytest.raises(TokenAlignmentError, match="TG206"):
        assert_special_tokens_aligned(model, tokenizer, allow=["TG201,TG203"])
    with pytest.raises(ValueError, match="unknown code 'TG999'"):
        assert_special_tokens_aligned(model, tokenizer, allow=["TG999"])


def _layout(**kwargs: object) -> TokenLayout:
    base: dict[str, object] = {
        "model": {"bos": 1, "eos": 2, "pad": 0},
        "generation": {"bos": 1, "eos": 2, "pad": 0},
        "tokenizer": {"bos": 1, "eos": 2, "pad": 0},
        "vocab_size": 10,
        "embedding_rows": 10,
        "tokenizer_length": 10,
    }
    base.update(kwargs)
    return TokenLayout(**base)  # type: ignore[arg-type]


def _codes(layout: TokenLayout) -> set[tuple[str, str, str]]:
    return {(f.code, f.field, f.severity) for f in check_layout(layout).findings}


def test_aligned_layout_is_clean() -> None:
    assert _codes(_layout()) == set()


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("2", "not an int (str)"),
        (2.0, "not an int (float)"),
        (True, "not an int (bool)"),
        (-1, "negative"),
        (10, ">= the 10 embedding rows"),
        ([2, 99], ">= the 10 embedding rows"),
    ],
)
def test_tg204_out_of_range_ids(value: object, problem: str) -> None:
    report = check_layout(_layout(generation={"bos": 1, "eos": value, "pad": 0}))
    (finding,) = [f for f in report.findings if f.code == "TG204"]
    assert problem in finding.message and finding.severity == "error"


def test_tg204_empty_eos_list_and_tg209_nothing_stops() -> None:
    codes = _codes(_layout(generation={"bos": 1, "eos": [], "pad": 0}))
    assert ("TG204", "eos", "error") in codes and ("TG209", "eos", "error") in codes


def test_tg209_warning_when_other_stop_ids_remain_and_tg202_for_unexplained_extra() -> None:
    codes = _codes(_layout(generation={"bos": 1, "eos": [3], "pad": 0}, tokenizer={"bos": 1, "eos": 3, "pad": 0}))
    assert ("TG209", "eos", "warning") in codes and ("TG201", "eos", "error") in codes
    assert _codes(_layout(generation={"bos": 1, "eos": [2, 5], "pad": 0})) == {("TG202", "eos", "warning")}


def test_tg205_tokenizer_longer_than_embeddings() -> None:
    (finding,) = check_layout(_layout(tokenizer_length=12)).findings
    assert (finding.code, finding.severity) == ("TG205", "error") and "model.resize_token_embeddings(12)" in finding.hint


def test_tg206_tg207_and_tg208() -> None:
    pad_is_eos = {"bos": 1, "eos": 2, "pad": 2}
    # a base model padding with eos (no chat template): a convention to watch
    assert _codes(_layout(tokenizer=pad_is_eos, model=pad_is_eos, generation=pad_is_eos)) == {("TG206", "pad", "warning")}
    # pad = eos = the chat end of turn, the only stop id: nothing else can end a turn
    assert _codes(_layout(tokenizer=pad_is_eos, model=pad_is_eos, generation=pad_is_eos, end_of_turn=("</s>", 2))) == {
        ("TG206", "pad", "error")
    }
    # another stop id exists (a dedicated end of turn that stops generation): a convention to watch, a warning
    two_stops = {"bos": 1, "eos": [2, 7], "pad": 2}
    # (the tokenizer eos 2 is not that end of turn: TG212, a warning since the generation eos stops on both)
    assert _codes(_layout(tokenizer=pad_is_eos, model=two_stops, generation=two_stops, end_of_turn=("<|end|>", 7))) == {
        ("TG206", "pad", "warning"),
        ("TG212", "eos", "warning"),
    }
    none = {"bos": 1, "eos": 2, "pad": None}
    assert _codes(_layout(tokenizer=none, model=none, generation=none)) == {("TG207", "pad", "warning")}
    # the end of turn stops nothing (TG208), and the tokenizer eos 2, what servers stop on, is not it (TG212)
    not_stopping = {("TG208", "eos", "error"), ("TG212", "eos", "error")}
    assert _codes(_layout(end_of_turn=("<|end|>", 7))) == not_stopping
    # without a generation config, the model config eos is what must stop
    assert _codes(_layout(generation=None, end_of_turn=("<|end|>", 7))) == not_stopping
    two = {"bos": 1, "eos": [2, 7], "pad": 0}
    assert _codes(_layout(generation=None, model=two, end_of_turn=("<|end|>", 7))) == {("TG212", "eos", "warning")}
    # the tokenizer eos is the end of turn: nothing for servers to miss
    turn = {"bos": 1, "eos": 7, "pad": 0}
    assert _codes(_layout(generation=None, model=two, tokenizer=turn, end_of_turn=("<|end|>", 7))) == set()


def test_tg202_bos_only_where_the_tokenizer_does_not_decide() -> None:
    tok = {"bos": None, "eos": 2, "pad": 0}
    assert _codes(_layout(tokenizer=tok, generation={"bos": 3, "eos": 2, "pad": 0})) == {
        ("TG201", "bos", "warning"),
        ("TG202", "bos", "warning"),
    }
    # the tokenizer defines bos: the generation config disagreeing with it is TG203, not TG202
    assert _codes(_layout(generation={"bos": 3, "eos": 2, "pad": 0})) == {("TG203", "bos", "error")}


def test_every_code_is_documented_in_readme() -> None:
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    rows = {line.split("|")[1].strip(): line for line in readme.splitlines() if line.startswith(("| TG2", "| TG3"))}
    assert set(rows) == set(STATIC_CODES)
    for code in STATIC_CODES.values():
        assert rows[code.code].split("|")[2].strip() == code.severity


def test_report_ok_ignores_warnings() -> None:
    report = Report(_layout(), [])
    assert report.ok and report.failing(strict=True) == []
