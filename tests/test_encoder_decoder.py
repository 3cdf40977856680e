"""Encoder-decoders (issue 13): TG213 when ``decoder_start_token_id`` is missing (training and generation need it)
or differs between the configs; the folder check agrees with the object check. Checked against what the
installed transformers does: training without it raises."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("transformers")
import torch
from transformers import (
    BertConfig,
    EncoderDecoderConfig,
    EncoderDecoderModel,
    T5Config,
    T5ForConditionalGeneration,
)

from pytest_tokenguard.static.api import check_special_tokens
from pytest_tokenguard.static.checks import check_layout
from pytest_tokenguard.static.folder import read_folder

SMALL: dict[str, Any] = {
    "vocab_size": 100,
    "hidden_size": 16,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 32,
}


def bert2bert() -> Any:
    encoder, decoder = BertConfig(**SMALL), BertConfig(**SMALL, is_decoder=True, add_cross_attention=True)
    torch.manual_seed(0)
    return EncoderDecoderModel(EncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder))


def t5(**extra: Any) -> Any:
    torch.manual_seed(0)
    config = T5Config(vocab_size=100, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2, pad_token_id=0, **extra)
    return T5ForConditionalGeneration(config)


def _tg213(report: Any) -> list[tuple[str, str]]:
    return [(f.severity, f.message) for f in report.findings if f.code == "TG213"]


def _folder_report(model: Any) -> Any:
    with tempfile.TemporaryDirectory() as directory:
        model.save_pretrained(directory)
        return check_layout(read_folder(Path(directory)).layout)


def _trains(model: Any) -> bool:
    batch = {"input_ids": torch.tensor([[5, 6, 7]]), "labels": torch.tensor([[8, 9]])}
    try:
        model(**batch)
    except (ValueError, AttributeError):
        return False
    return True


def test_bert2bert_without_a_decoder_start_is_an_error_and_cannot_train() -> None:
    model = bert2bert()
    assert _tg213(check_special_tokens(model)) == [
        (
            "error",
            "model config decoder_start_token_id is not set: training an encoder-decoder shifts the labels right from "
            "it (shift_tokens_right raises ValueError), and generate() has no start id either",
        )
    ]
    assert not _trains(model)  # what the finding predicts, from the installed transformers
    model.config.decoder_start_token_id = 1
    model.config.pad_token_id = 0
    assert _tg213(check_special_tokens(model)) == []
    assert _trains(model)


def test_t5_sibling() -> None:
    missing = t5()
    assert [severity for severity, _ in _tg213(check_special_tokens(missing))] == ["error"]
    assert not _trains(missing)
    fixed = t5(decoder_start_token_id=0)  # what t5-small's config.json says: start from pad
    assert _tg213(check_special_tokens(fixed)) == []
    assert _trains(fixed)
    fixed.generation_config.decoder_start_token_id = 3
    assert [severity for severity, _ in _tg213(check_special_tokens(fixed))] == ["warning"]


@pytest.mark.parametrize("build", [bert2bert, t5, lambda: t5(decoder_start_token_id=0)], ids=["bert2bert", "t5", "t5-fixed"])
def test_folder_check_agrees(build: Any) -> None:
    model = build()
    objects = sorted((f.code, f.field, f.severity, f.message) for f in check_special_tokens(model).findings)
    folder = sorted((f.code, f.field, f.severity, f.message) for f in _folder_report(model).findings)
    assert folder == objects
