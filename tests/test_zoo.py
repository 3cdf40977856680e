"""Every zoo family carries exactly the ids, strings, lengths and generation config of its layout data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import transformers

from pytest_tokenguard.static.layout import NAMED_SPECIALS
from pytest_tokenguard.static.objects import tokenizer_end_of_turn
from pytest_tokenguard.suite import zoo

ROOT = Path(__file__).resolve().parents[1]


def test_at_least_eight_families_and_one_source_of_truth() -> None:
    assert len(zoo.families()) >= 8
    assert zoo.layouts() == json.loads((ROOT / "fixtures" / "token_layouts.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module", params=zoo.families())
def family(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any], Any, Any]:
    model, tokenizer = zoo.build(request.param)
    return request.param, zoo.layout(request.param), model, tokenizer


def test_model_config_and_architecture(family: tuple[str, dict[str, Any], Any, Any]) -> None:
    _, data, model, _ = family
    expected_class = data["architecture"]
    if not hasattr(transformers, expected_class):  # older transformers: documented fallback
        expected_class = zoo.ARCHITECTURE_FALLBACKS[expected_class]
    assert type(model).__name__ == expected_class
    for key, value in data["model_config"].items():
        assert getattr(model.config, key) == value, key
    assert model.get_input_embeddings().num_embeddings == data["model_config"]["vocab_size"]
    assert model.config.hidden_size <= 32 and model.config.num_hidden_layers == 1


def test_tokenizer_strings_ids_and_length(family: tuple[str, dict[str, Any], Any, Any]) -> None:
    _, data, _, tokenizer = family
    tok = data["tokenizer"]
    assert len(tokenizer) == tok["length"]
    for name in NAMED_SPECIALS:
        expected = tok[name]
        actual = (getattr(tokenizer, f"{name}_token"), getattr(tokenizer, f"{name}_token_id"))
        assert actual == (tuple(expected) if expected else (None, None)), name
        if expected:
            assert tokenizer.convert_ids_to_tokens(expected[1]) == expected[0]
            assert tokenizer.convert_tokens_to_ids(expected[0]) == expected[1]


def test_chat_template_ends_turns_with_the_real_end_of_turn(family: tuple[str, dict[str, Any], Any, Any]) -> None:
    _, data, _, tokenizer = family
    expected = data["tokenizer"]["end_of_turn"]
    found, note = tokenizer_end_of_turn(tokenizer)
    if data["tokenizer"]["chat_template"] is None:
        assert tokenizer.chat_template is None and found is None
    else:
        assert note is None and found == tuple(expected)
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}], tokenize=False
        )
        assert expected[0] in text


def test_generation_config_is_the_familys(family: tuple[str, dict[str, Any], Any, Any]) -> None:
    _, data, model, _ = family
    for key, value in data["generation_config"].items():
        assert getattr(model.generation_config, key) == value, key


def test_builds_are_independent_copies() -> None:
    first_model, first_tokenizer = zoo.build("smollm2-135m-instruct")
    first_model.config.pad_token_id = None
    first_tokenizer.add_special_tokens({"pad_token": "<|tg_pad|>"})
    second_model, second_tokenizer = zoo.build("smollm2-135m-instruct")
    assert second_model.config.pad_token_id == 2 and second_tokenizer.pad_token == "<|im_end|>"
    assert second_model is not first_model
