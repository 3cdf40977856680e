"""Serving stop ids (issue 13, case merge-rewrote-eos): TG212 when the tokenizer eos is not the chat end of
turn, and declared special stop ids (``<|tool_response>``) kept by the fixes and never flagged by TG202."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("transformers")
from transformers import AutoTokenizer, Gemma2Config, Gemma2ForCausalLM, GenerationConfig

from pytest_tokenguard import versions
from pytest_tokenguard.static.alignment import align_special_tokens, generation_config_for
from pytest_tokenguard.static.api import check_special_tokens
from pytest_tokenguard.static.checks import check_layout
from pytest_tokenguard.static.folder import read_folder
from pytest_tokenguard.suite import zoo
from tests.test_cli import run_cli

CASE = Path(__file__).parent / "data" / "cases" / "merge-rewrote-eos"


def _codes(report: Any) -> set[tuple[str, str, str]]:
    return {(f.code, f.field, f.severity) for f in report.findings}


def _gemma4(folder: Path) -> tuple[Any, Any]:
    """The folder's tokenizer and a tiny Gemma2 model carrying the case's ids (config and generation config)."""
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = Gemma2ForCausalLM(
        Gemma2Config(
            vocab_size=262144,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=8,
            bos_token_id=2,
            eos_token_id=[1, 106],
            pad_token_id=0,
        )
    )
    model.generation_config = GenerationConfig(bos_token_id=2, eos_token_id=[1, 106, 50], pad_token_id=0)
    return model, tokenizer


def test_original_is_clean_and_the_merge_is_flagged(capsys: pytest.CaptureFixture[str]) -> None:
    original = run_cli(capsys, "check", CASE / "original", "--strict")
    assert original.rc == 0 and "no findings" in original.out
    merged = run_cli(capsys, "check", CASE / "merged")
    assert merged.rc == 0  # a warning: the generation eos still stops on both ids
    assert (
        "TG212 warning: tokenizer eos 1 '<eos>' is not the chat end of turn 106 '<turn|>': servers that stop on the "
        "tokenizer eos alone (a llama.cpp GGUF, mlx-lm without generation_config.json) run past each turn; the "
        "generation eos [1 '<eos>', 106 '<turn|>', 50 '<|tool_response>'] stops on both"
    ) in merged.out.splitlines()
    assert run_cli(capsys, "check", CASE / "merged", "--strict").rc == 1


@pytest.mark.parametrize("name", ["original", "merged"])
def test_object_api_agrees_with_the_folder(name: str) -> None:
    model, tokenizer = _gemma4(CASE / name)
    if not tokenizer.chat_template:  # the folder check reads chat_template.jinja whatever transformers is installed
        pytest.skip("this transformers does not load chat_template.jinja (a file of transformers >= 4.50 folders)")
    if getattr(tokenizer, "add_bos_token", False) and versions.parse(versions.installed_text("transformers") or "0").major < 5:
        pytest.skip(
            "transformers 4.x rebuilds Gemma's post-processor from add_bos_token (so it adds bos and the template's bos "
            "doubles: TG301); the case was written by transformers 5, whose post-processor decides, as the folder check reads it"
        )
    folder = _codes(check_layout(read_folder(CASE / name).layout))
    assert _codes(check_special_tokens(model, tokenizer)) == folder
    assert ("TG212" in {code for code, _, _ in folder}) is (name == "merged")


@pytest.mark.parametrize("name", ["original", "merged"])
def test_fixes_keep_the_tool_stop_id(name: str) -> None:
    model, tokenizer = _gemma4(CASE / name)
    assert tokenizer.added_tokens_decoder[50].special  # <|tool_response> is declared special
    assert generation_config_for(model, tokenizer).eos_token_id == [1, 106, 50]
    align_special_tokens(model, tokenizer)
    assert model.generation_config.eos_token_id == [1, 106, 50]
    assert "TG202" not in check_special_tokens(model, tokenizer).codes()


def test_a_stop_id_that_is_not_a_special_token_is_still_tg202() -> None:
    model, tokenizer = _gemma4(CASE / "original")
    model.generation_config.eos_token_id = [1, 106, 60]  # 60: an ordinary byte token, not declared special
    assert ("TG202", "eos", "warning") in _codes(check_special_tokens(model, tokenizer))
    assert generation_config_for(model, tokenizer).eos_token_id == [1, 106]


def test_sibling_qwen3_base_tokenizer_eos_rewritten_is_an_error(tmp_path: Path) -> None:
    """Qwen3 instruct whose tokenizer eos a re-save rewrote to <|endoftext|> and whose generation config stops only
    there: nothing stops on <|im_end|> (TG208) and servers stop on <|endoftext|> (TG212 error)."""
    model, tokenizer = zoo.build("qwen3-0.6b")
    tokenizer.eos_token = "<|endoftext|>"
    model.config.eos_token_id = model.generation_config.eos_token_id = tokenizer.eos_token_id
    codes = _codes(check_special_tokens(model, tokenizer))
    assert {("TG212", "eos", "error"), ("TG208", "eos", "error")} <= codes
    model.config.save_pretrained(tmp_path)
    model.generation_config.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    assert _codes(check_layout(read_folder(tmp_path).layout)) >= {("TG212", "eos", "error")}


def test_sibling_phi3_with_both_stop_ids_is_a_warning() -> None:
    """Phi-3 as shipped: tokenizer eos <|endoftext|>, end of turn <|end|>, both in the generation eos."""
    model, tokenizer = zoo.build("phi-3-mini-4k-instruct")
    assert ("TG212", "eos", "warning") in _codes(check_special_tokens(model, tokenizer))
    tokenizer.eos_token = "<|end|>"  # the fix: servers stop on the end of turn
    assert "TG212" not in check_special_tokens(model, tokenizer).codes()
