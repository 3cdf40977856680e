"""Encoder-decoders (issue 13): TG213 when ``decoder_start_token_id`` is missing (training and generation need it)
or differs between the configs; the folder check agrees with the object check. Checked against what the
installed transformers does: training without it raises.

Two-model encoder-decoders (bert2bert ``EncoderDecoderModel``, ``VisionEncoderDecoderModel``) nest an ``encoder``
and a ``decoder`` config: the ids and vocab size are the decoder's (``get_text_config(decoder=True)``), and the
tokenizer's ids must fit each side's embedding rows (TG205 names the side)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("transformers")
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import (
    BertConfig,
    EncoderDecoderConfig,
    EncoderDecoderModel,
    PreTrainedTokenizerFast,
    T5Config,
    T5ForConditionalGeneration,
    VisionEncoderDecoderConfig,
    VisionEncoderDecoderModel,
    ViTConfig,
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


def bert2bert(encoder_vocab: int = 100, decoder_vocab: int = 100, top: dict[str, Any] | None = None, **decoder_ids: Any) -> Any:
    """``EncoderDecoderModel`` of two tiny BERTs; ``decoder_ids`` go into the nested decoder config, ``top`` into
    the ``EncoderDecoderConfig`` (``decoder_start_token_id``, ``pad_token_id``)."""
    encoder = BertConfig(**{**SMALL, "vocab_size": encoder_vocab})
    decoder = BertConfig(**{**SMALL, "vocab_size": decoder_vocab}, is_decoder=True, add_cross_attention=True, **decoder_ids)
    torch.manual_seed(0)
    return EncoderDecoderModel(EncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder, **(top or {})))


BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def bert_tokenizer(size: int) -> Any:
    """A WordPiece tokenizer of ``size`` tokens (ids 0..size-1) that wraps texts in [CLS] ... [SEP], as BERT's."""
    vocab = {token: i for i, token in enumerate(BERT_SPECIALS)}
    vocab.update({f"w{i}": i for i in range(len(vocab), size)})
    backend = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.post_processor = processors.BertProcessing(("[SEP]", 3), ("[CLS]", 2))
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]"
    )


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


def _findings(report: Any) -> list[tuple[str, str, str, str, str]]:
    return sorted((f.code, f.field, f.severity, f.message, f.hint) for f in report.findings)


def _both(model: Any, tokenizer: Any, directory: Path) -> tuple[Any, Any]:
    """The object check, and the folder check of the same model and tokenizer saved with save_pretrained."""
    model.save_pretrained(directory)
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
    return check_special_tokens(model, tokenizer), check_layout(read_folder(directory).layout)


def _sides(report: Any) -> tuple[Any, ...]:
    layout = report.layout
    return layout.vocab_size, layout.embedding_rows, layout.side_vocab_sizes, layout.side_rows, layout.model


def _major() -> int:
    from pytest_tokenguard import versions

    return versions.parse(versions.installed_text("transformers") or "0").major


#: transformers 4.x writes a nested config's values only where they differ from that config class's defaults
#: (``recursive_diff_dict``): BertConfig's pad 0 is not in config.json, and a reader without transformers cannot
#: know the class default; transformers 5 writes the nested configs whole
NESTED_DEFAULTS_WRITTEN = pytest.mark.skipif(
    _major() < 5,
    reason="transformers 4.x leaves values equal to the nested config class's defaults out of config.json "
    "(recursive_diff_dict): the torch-free folder reader cannot restore them",
)


#: bert2bert as its model card sets it up: start from [CLS], pad with [PAD], stop on [SEP]
ALIGNED: dict[str, Any] = {"top": {"decoder_start_token_id": 2, "pad_token_id": 0}, "pad_token_id": 0, "eos_token_id": 3}


@NESTED_DEFAULTS_WRITTEN
def test_bert2bert_reads_both_nested_configs(tmp_path: Path) -> None:
    model = bert2bert(110, 110, **ALIGNED)
    tokenizer = bert_tokenizer(110)
    objects, folder = _both(model, tokenizer, tmp_path)
    expected = (110, 110, {"encoder": 110, "decoder": 110}, {"encoder": 110, "decoder": 110}, {"bos": None, "eos": 3, "pad": 0})
    assert _sides(objects) == _sides(folder) == expected
    # only BERT's convention: its tokenizer has no eos token ([SEP] ends its texts), the decoder config stops on it
    assert [(f.code, f.severity, f.field) for f in folder.findings] == [("TG201", "warning", "eos")]
    assert _findings(folder) == _findings(objects)


def _encodes(part: Any, token_id: int) -> bool:
    """Whether one side of the model embeds ``token_id`` (what TG205 predicts)."""
    try:
        part.get_input_embeddings()(torch.tensor([[token_id]]))
    except IndexError:
        return False
    return True


@NESTED_DEFAULTS_WRITTEN
@pytest.mark.parametrize(
    ("encoder_vocab", "decoder_vocab", "side"),
    [(100, 120, "encoder"), (120, 100, "decoder")],
    ids=["encoder-short", "decoder-short"],
)
def test_a_side_shorter_than_the_tokenizer_is_named(encoder_vocab: int, decoder_vocab: int, side: str, tmp_path: Path) -> None:
    model = bert2bert(encoder_vocab, decoder_vocab, **ALIGNED)
    tokenizer = bert_tokenizer(110)
    objects, folder = _both(model, tokenizer, tmp_path / "before")
    assert _sides(folder)[:4] == (
        decoder_vocab,
        decoder_vocab,
        {"encoder": encoder_vocab, "decoder": decoder_vocab},
        {"encoder": encoder_vocab, "decoder": decoder_vocab},
    )
    tg205 = [(f.severity, f.values, f.message, f.hint) for f in folder.findings if f.code == "TG205"]
    assert tg205 == [
        (
            "error",
            {"tokenizer": 110, side: 100},
            f"tokenizer has 110 tokens but the {side} embeds only 100 ids (10 token ids cannot be embedded: model.{side} "
            "fails on them)",
            f"model.{side}.resize_token_embeddings(110)",
        )
    ]
    assert _findings(folder) == _findings(objects)
    part = getattr(model, side)
    assert not _encodes(part, 105)  # what the finding predicts, from the installed transformers
    part.resize_token_embeddings(110)  # the fix it names (EncoderDecoderModel's own raises NotImplementedError)
    assert _encodes(part, 105)
    objects, folder = _both(model, tokenizer, tmp_path / "after")
    assert [f.code for f in folder.findings if f.code == "TG205"] == []
    assert _findings(folder) == _findings(objects)


def test_a_decoder_eos_beyond_the_decoders_rows_names_the_decoder(tmp_path: Path) -> None:
    # 105 fits the encoder's 120 rows, not the decoder's 100: only the decoder's rows count for config ids
    objects, folder = _both(
        bert2bert(120, 100, top={"decoder_start_token_id": 2}, pad_token_id=0, eos_token_id=105), None, tmp_path
    )
    messages = [f.message for f in folder.findings if f.code == "TG204"]
    assert messages == [
        "model config eos 105: >= the decoder's 100 embedding rows",
        "generation config eos 105: >= the decoder's 100 embedding rows",
    ]
    assert _findings(folder) == _findings(objects)


@NESTED_DEFAULTS_WRITTEN
def test_vision_encoder_decoder_has_only_a_decoder_side(tmp_path: Path) -> None:
    encoder = ViTConfig(image_size=8, patch_size=4, **{k: v for k, v in SMALL.items() if k != "vocab_size"})
    decoder = BertConfig(**SMALL, pad_token_id=0, eos_token_id=3)  # 100 rows
    torch.manual_seed(0)
    model = VisionEncoderDecoderModel(
        VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder, decoder_start_token_id=2, pad_token_id=0)
    )
    objects, folder = _both(model, bert_tokenizer(110), tmp_path)
    # a ViT encoder embeds no tokens: no vocab size, no word embedding tensor (its patch projection is not one)
    assert _sides(objects) == _sides(folder) == (100, 100, {"decoder": 100}, {"decoder": 100}, {"bos": None, "eos": 3, "pad": 0})
    assert [f.message for f in folder.findings if f.code == "TG205"] == [
        "tokenizer has 110 tokens but the decoder embeds only 100 ids (10 token ids cannot be embedded: model.decoder "
        "fails on them)"
    ]
    assert _findings(folder) == _findings(objects)


#: one tokenizer for every example: 110 ids, so row counts on either side of it matter
_TOKENIZER = bert_tokenizer(110)
_ID = st.none() | st.integers(0, 130)


@NESTED_DEFAULTS_WRITTEN
@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    encoder_rows=st.integers(95, 125),
    decoder_rows=st.integers(95, 125),
    bos=_ID,
    eos=_ID,
    pad=st.none() | st.integers(0, 94),  # the decoder's embeddings take it as padding_idx: it must be a row
    nested_start=_ID,
    top_start=_ID,
    top_pad=_ID,
    with_tokenizer=st.booleans(),
)
def test_folder_check_equals_object_check_for_random_bert2bert(
    encoder_rows: int,
    decoder_rows: int,
    bos: int | None,
    eos: int | None,
    pad: int | None,
    nested_start: int | None,
    top_start: int | None,
    top_pad: int | None,
    with_tokenizer: bool,
) -> None:
    top = {"decoder_start_token_id": top_start, "pad_token_id": top_pad}
    ids = {"bos_token_id": bos, "eos_token_id": eos, "pad_token_id": pad, "decoder_start_token_id": nested_start}
    model = bert2bert(encoder_rows, decoder_rows, top, **ids)
    tokenizer = _TOKENIZER if with_tokenizer else None
    with tempfile.TemporaryDirectory() as directory:
        objects, folder = _both(model, tokenizer, Path(directory))
    assert _sides(folder) == _sides(objects)
    assert folder.layout.side_rows == {"encoder": encoder_rows, "decoder": decoder_rows}
    assert folder.layout.model == {"bos": bos, "eos": eos, "pad": pad}  # the nested decoder's, not the top level's
    assert folder.layout.decoder_start["model"] == top_start  # training shifts labels with the top level's
    assert _findings(folder) == _findings(objects)
