"""Sequence checks (TG3xx) on batches built by real zoo tokenizers and transformers' own collators: every code
is found on the faulty batch and absent on the corrected one; tensors, numpy arrays and lists agree; odd
input never raises."""

from __future__ import annotations

import copy
import json
import pickle
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch.overrides import TorchFunctionMode
from transformers import DataCollatorForLanguageModeling, T5Config

from pytest_tokenguard.static.checks import Report, StaticCode, StaticFinding
from pytest_tokenguard.static.objects import layout_from_objects
from pytest_tokenguard.static.sequences import SEQUENCE_CODES, check_batch
from pytest_tokenguard.suite import zoo

PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
Pair = tuple[Any, Any]


@contextmanager
def setting(obj: Any, **values: Any) -> Iterator[None]:
    """Set attributes for one block (the module fixtures are shared)."""
    old = {name: getattr(obj, name) for name in values}
    for name, value in values.items():
        setattr(obj, name, value)
    try:
        yield
    finally:
        for name, value in old.items():
            setattr(obj, name, value)


def encoding_adds(tokenizer: Any, *, bos: bool, eos: bool = False) -> None:
    """Make ``tokenizer(text)`` add bos / eos through its post-processor, as Llama / Mistral fast tokenizers ship
    (``add_bos_token`` / ``add_eos_token`` only rebuild it on some classes and versions)."""
    from tokenizers import processors

    names = [*([tokenizer.bos_token] if bos else []), "$A", *([tokenizer.eos_token] if eos else [])]
    specials = {name: tokenizer.convert_tokens_to_ids(name) for name in names if name != "$A"}
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=" ".join(names), pair=" ".join([*names, "$B"]), special_tokens=list(specials.items())
    )


@contextmanager
def appending_eos(tokenizer: Any, **values: Any) -> Iterator[None]:
    """The tokenizer appends eos to every text for one block (``add_eos_token=True``), with ``values`` set too."""
    post = tokenizer.backend_tokenizer.post_processor
    encoding_adds(tokenizer, bos=True, eos=True)
    try:
        with setting(tokenizer, **values):
            yield
    finally:
        tokenizer.backend_tokenizer.post_processor = post


def codes(report: Report) -> list[str]:
    return report.codes()


def only(report: Report, code: str) -> StaticFinding:
    (finding,) = [f for f in report.findings if f.code == code]
    return finding


@pytest.fixture(scope="module")
def llama() -> Pair:
    model, tokenizer = zoo.build("llama-3.2-1b")
    encoding_adds(tokenizer, bos=True)  # as the real Llama 3.2 tokenizer ships: it prepends <|begin_of_text|>
    tokenizer.pad_token = tokenizer.eos_token  # Llama 3.2 has no pad token; eos is the usual stand-in
    return model, tokenizer


@pytest.fixture(scope="module")
def mistral() -> Pair:
    model, tokenizer = zoo.build("mistral-7b-instruct-v0.3")
    encoding_adds(tokenizer, bos=True)  # as the real tokenizer ships; its chat template writes {{ bos_token }} too
    tokenizer.pad_token = tokenizer.unk_token
    return model, tokenizer


@pytest.fixture(scope="module")
def qwen3() -> Pair:
    return zoo.build("qwen3-0.6b")  # dedicated pad <|endoftext|>, eos = end of turn <|im_end|>, no bos


@pytest.fixture(scope="module")
def smollm2() -> Pair:
    return zoo.build("smollm2-135m-instruct")  # pad == eos == end of turn <|im_end|>


@pytest.fixture(scope="module")
def smollm2_padded() -> Pair:
    """smollm2 with a dedicated pad token (id 49152) and its embeddings resized to hold it."""
    model, tokenizer = zoo.build("smollm2-135m-instruct")
    tokenizer.add_special_tokens({"pad_token": "<|pad|>"})
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    return model, tokenizer


def chat(tokenizer: Any, *questions: str, generation_prompt: bool = False) -> list[str]:
    return [
        tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=generation_prompt)
        for q in questions
    ]


def test_code_table_covers_tg301_to_tg308() -> None:
    assert list(SEQUENCE_CODES)[:8] == [f"TG30{i}" for i in range(1, 9)]  # TG309+: tests/test_sequence_rules.py
    assert all(isinstance(c, StaticCode) and c.title and c.hint for c in SEQUENCE_CODES.values())
    severities = {code: c.severity for code, c in SEQUENCE_CODES.items()}
    assert severities == {
        "TG301": "error",
        "TG302": "error",
        "TG303": "error",
        "TG304": "error / warning",
        "TG305": "error",
        "TG306": "warning",
        "TG307": "error",
        "TG308": "error",
    } | {code: severities[code] for code in list(SEQUENCE_CODES)[8:]}


# --- TG301 ---------------------------------------------------------------------------------------------


def test_tg301_template_bos_plus_tokenizer_bos_is_found_and_add_special_tokens_false_fixes_it(mistral: Pair) -> None:
    model, tokenizer = mistral
    conversations = [
        [{"role": "user", "content": "Who are you?"}, {"role": "assistant", "content": "Moses."}],
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}],
    ]
    texts = [tokenizer.apply_chat_template(c, tokenize=False) for c in conversations]
    assert all(text.startswith("<s>") for text in texts)  # the template writes bos itself

    doubled = check_batch(tokenizer(texts, padding=True, return_tensors="pt"), tokenizer, model, purpose="train")
    finding = only(doubled, "TG301")
    assert finding.severity == "error" and finding.field == "batch"
    assert finding.values["rows"] == [0, 1] and finding.values["ids"] == [1]
    assert "add_special_tokens=False" in finding.hint

    fixed = tokenizer(texts, padding=True, return_tensors="pt", add_special_tokens=False)
    assert "TG301" not in codes(check_batch(fixed, tokenizer, model, purpose="train"))
    # letting the template tokenize is the other fix: transformers then adds no special tokens of its own
    rendered = [tokenizer.apply_chat_template(c, tokenize=True, return_dict=True) for c in conversations]
    assert "TG301" not in codes(check_batch(tokenizer.pad(rendered, return_tensors="pt"), tokenizer, model, purpose="train"))


def test_tg301_message_names_row_positions_and_bos_string(llama: Pair) -> None:
    model, tokenizer = llama
    report = check_batch(tokenizer("<|begin_of_text|>Hi"), tokenizer, model)  # 1-D lists: one row
    assert str(only(report, "TG301")) == (
        "TG301 error: row 0 starts with bos 128000 '<|begin_of_text|>' twice (row 0 at positions [0, 1])\n"
        "    fix: the chat template already writes bos: tokenize the rendered text with add_special_tokens=False, or "
        "apply_chat_template(..., tokenize=True)"
    )
    assert only(report, "TG301").values == {"rows": [0], "positions": [[0, 1]], "ids": [128000]}
    assert codes(check_batch(tokenizer("<|begin_of_text|>Hi", add_special_tokens=False), tokenizer, model)) == []


def test_tg301_counts_real_tokens_after_left_padding(llama: Pair) -> None:
    model, tokenizer = llama
    batch = tokenizer(["<|begin_of_text|>Hi", "Who are you?"], padding=True, return_tensors="pt")
    finding = only(check_batch(batch, tokenizer, model), "TG301")
    assert finding.values == {"rows": [0], "positions": [[9, 10]], "ids": [128000]}  # 9 pad ids (eos) before


# --- TG302 ---------------------------------------------------------------------------------------------


def test_tg302_add_eos_token_makes_every_prompt_end_in_eos(llama: Pair) -> None:
    model, tokenizer = llama
    with appending_eos(tokenizer):
        batch = tokenizer(["Who are you?", "Hi"], padding=True, return_tensors="pt")
    report = check_batch(batch, tokenizer, model)
    assert codes(report) == ["TG302"]
    assert only(report, "TG302").message == (
        "rows [0, 1] end in eos 128001 '<|end_of_text|>' (row 0 at position 13; row 1 at position 13): "
        "generation starts after the end of a sequence"
    )
    assert codes(check_batch(tokenizer(["Who are you?", "Hi"], padding=True, return_tensors="pt"), tokenizer, model)) == []
    # a training batch is meant to end in eos
    assert "TG302" not in codes(check_batch(batch, tokenizer, model, purpose="train"))


def test_tg302_chat_prompt_without_generation_prompt_ends_in_end_of_turn(qwen3: Pair) -> None:
    model, tokenizer = qwen3
    ended = tokenizer(chat(tokenizer, "Who are you?", "Hi"), padding=True, return_tensors="pt")
    finding = only(check_batch(ended, tokenizer, model), "TG302")
    assert finding.message == (
        "rows [0, 1] end in eos 151645 '<|im_end|>' (row 0 at position 29, then '\\n'; row 1 at position 29, then '\\n'): "
        "generation starts after the end of a sequence"
    )
    assert "add_generation_prompt=True" in finding.hint
    prompts = tokenizer(chat(tokenizer, "Who are you?", "Hi", generation_prompt=True), padding=True, return_tensors="pt")
    assert codes(check_batch(prompts, tokenizer, model)) == []


def test_tg302_and_tg308_do_not_apply_to_encoder_decoder_models(llama: Pair) -> None:
    _, tokenizer = llama
    config = T5Config(vocab_size=len(tokenizer), d_model=8, num_layers=1, num_heads=1, d_kv=4, d_ff=8)
    with appending_eos(tokenizer, padding_side="right"):
        batch = tokenizer(["Who are you?", "Hi"], padding=True, return_tensors="pt")
    assert codes(check_batch(batch, tokenizer)) == ["TG302", "TG308"]
    assert codes(check_batch(batch, tokenizer, config)) == []  # T5 inputs end in </s>, padded right


# --- TG303 / TG304 -------------------------------------------------------------------------------------


def test_tg303_collator_masks_every_eos_when_pad_is_eos(smollm2: Pair, smollm2_padded: Pair) -> None:
    model, tokenizer = smollm2
    texts = zoo.chat_texts(tokenizer)[:2]
    batch = DataCollatorForLanguageModeling(tokenizer, mlm=False)([tokenizer(t) for t in texts])
    report = check_batch(batch, tokenizer, model)
    assert codes(report) == ["TG303"]
    assert str(only(report, "TG303")).splitlines()[0] == (
        "TG303 error: all 4 eos / end-of-turn positions of the batch (eos 2 '<|im_end|>') are -100 in labels "
        "(row 0 at positions [43, 99]; row 1 at positions [43, 99]): the model is never trained to stop"
    )
    assert "pad_token" in only(report, "TG303").hint

    model, tokenizer = smollm2_padded  # the same with a dedicated pad token: eos stays in the labels
    fixed = DataCollatorForLanguageModeling(tokenizer, mlm=False)([tokenizer(t) for t in texts])
    assert codes(check_batch(fixed, tokenizer, model)) == []


def test_tg304_training_texts_without_eos_then_tg303_once_eos_is_the_pad(llama: Pair) -> None:
    model, tokenizer = llama
    collate = DataCollatorForLanguageModeling(tokenizer, mlm=False)
    texts = ["Who are you? I am Moses.", "Where did you wander? In the desert."]
    report = check_batch(collate([tokenizer(t) for t in texts]), tokenizer, model)
    assert codes(report) == ["TG304"]
    finding = only(report, "TG304")
    assert finding.severity == "error"
    assert finding.message == (
        "rows [0, 1] (2 of 2 rows) have no eos 128001 '<|end_of_text|>' before padding; last real token: "
        "row 0 at position 36 (13 '.'); row 1 at position 36 (13 '.'): the model never sees where an answer ends"
    )
    # appending eos fixes TG304, but with pad == eos the collator masks that eos: TG303
    with_eos = collate([tokenizer(t + tokenizer.eos_token) for t in texts])
    assert codes(check_batch(with_eos, tokenizer, model)) == ["TG303"]


def test_tg304_is_a_warning_when_truncation_cuts_only_some_rows(smollm2_padded: Pair) -> None:
    model, tokenizer = smollm2_padded
    texts = [t + tokenizer.eos_token for t in ("Who are you? I am Moses.", "Where did you wander? Forty years in the desert.")]
    collate = DataCollatorForLanguageModeling(tokenizer, mlm=False)
    truncated = collate([tokenizer(t, truncation=True, max_length=30) for t in texts])
    finding = only(check_batch(truncated, tokenizer, model), "TG304")
    assert finding.severity == "warning" and finding.values["rows"] == [1]
    assert finding.message.startswith("row 1 (1 of 2 rows) has no eos 2 '<|im_end|>' before padding")
    assert codes(check_batch(collate([tokenizer(t) for t in texts]), tokenizer, model)) == []


def test_gpt2_leading_endoftext_is_the_bos_not_an_end() -> None:
    model, tokenizer = zoo.build("gpt2")  # bos == eos == <|endoftext|> 50256
    unconditional = {"input_ids": [[50256]], "attention_mask": [[1]]}
    assert codes(check_batch(unconditional, tokenizer, model)) == []  # generate() from bos alone is fine
    assert codes(check_batch(tokenizer("<|endoftext|>Hi<|endoftext|>"), tokenizer, model)) == ["TG302"]
    assert codes(check_batch(tokenizer("<|endoftext|>Hi"), tokenizer, model, purpose="train")) == ["TG304"]
    assert codes(check_batch(tokenizer("<|endoftext|>Hi<|endoftext|>"), tokenizer, model, purpose="train")) == []


# --- TG305 / TG306 -------------------------------------------------------------------------------------


def test_tg305_concatenating_padded_encodings_puts_padding_inside_rows(qwen3: Pair) -> None:
    model, tokenizer = qwen3
    questions = tokenizer(["Who are you?", "Hi"], padding=True, return_tensors="pt")
    answers = tokenizer([" Moses.", " Hello there"], padding=True, return_tensors="pt")
    joined = {key: torch.cat([questions[key], answers[key]], dim=1) for key in ("input_ids", "attention_mask")}
    report = check_batch(joined, tokenizer, model)
    assert codes(report) == ["TG305"]
    assert only(report, "TG305").message == (
        "row 0 has padding inside the sequence, attention 0 between attended tokens (row 0 at positions "
        "[12, 13, 14, 15, 16]), holding pad 151643 '<|endoftext|>'"
    )
    whole = tokenizer(["Who are you? Moses.", "Hi Hello there"], padding=True, return_tensors="pt")
    assert codes(check_batch(whole, tokenizer, model)) == []


def test_tg306_pad_string_written_into_text_is_attended(qwen3: Pair) -> None:
    model, tokenizer = qwen3
    # "<|endoftext|>" looks like an end of text, but it is Qwen3's pad token, not its eos
    wrong = tokenizer(["Who are you?" + tokenizer.pad_token, "Hi" + tokenizer.pad_token], padding=True, return_tensors="pt")
    report = check_batch(wrong, tokenizer, model, purpose="train")
    assert codes(report) == ["TG304", "TG306"]
    finding = only(report, "TG306")
    assert finding.severity == "warning"
    assert finding.message == (
        "rows [0, 1] attend to pad 151643 '<|endoftext|>' as content (row 0 at position 12; row 1 at position 12): "
        "the attention mask does not mark it as padding"
    )
    right = tokenizer(["Who are you?" + tokenizer.eos_token, "Hi" + tokenizer.eos_token], padding=True, return_tensors="pt")
    assert codes(check_batch(right, tokenizer, model, purpose="train")) == []


def test_tg306_never_fires_when_pad_is_also_eos(smollm2: Pair) -> None:
    model, tokenizer = smollm2
    batch = tokenizer(["Hi" + tokenizer.pad_token], return_tensors="pt")
    assert "TG306" not in codes(check_batch(batch, tokenizer, model, purpose="train"))


# --- TG307 ---------------------------------------------------------------------------------------------


def test_tg307_added_pad_token_without_resize_is_outside_the_embedding_rows(smollm2_padded: Pair) -> None:
    _, tokenizer = smollm2_padded
    small, _ = zoo.build("smollm2-135m-instruct")  # 49152 rows: the added pad id 49152 is one past the end
    texts = zoo.chat_texts(tokenizer)[:2]
    batch = DataCollatorForLanguageModeling(tokenizer, mlm=False)([tokenizer(t) for t in texts])
    report = check_batch(batch, tokenizer, small)
    assert codes(report) == ["TG307"]
    assert str(only(report, "TG307")) == (
        "TG307 error: input_ids hold [49152] outside [0, 49152) (row 0 at 25 positions [0, 1, 2, 3, 4, ...]): ids "
        "must be below the model's 49152 embedding rows\n"
        "    fix: model.resize_token_embeddings(len(tokenizer)) after adding tokens; labels must be -100 or an id the "
        "model can embed"
    )
    small.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    assert codes(check_batch(batch, tokenizer, small)) == []


def test_tg307_labels_must_be_ignore_index_or_an_id(llama: Pair) -> None:
    model, tokenizer = llama
    batch = tokenizer(["Hi" + tokenizer.eos_token], return_tensors="pt")
    labels = batch["input_ids"].clone()
    labels[0, 0] = -1  # a hand-rolled ignore value
    labels[0, 1] = 128256
    report = check_batch({**batch, "labels": labels}, tokenizer, model)
    finding = only(report, "TG307")
    assert finding.message == (
        "labels hold [-1, 128256], neither -100 nor in [0, 128256) (row 0 at positions [0, 1]): ids must be below the "
        "model's 128256 embedding rows"
    )
    assert finding.values == {"rows": [0], "positions": [[0, 1]], "ids": [-1, 128256]}
    labels[0, :2] = -100
    assert codes(check_batch({**batch, "labels": labels}, tokenizer, model)) == []


def test_tg307_without_a_model_checks_against_the_tokenizer_length(llama: Pair) -> None:
    _, tokenizer = llama
    finding = only(check_batch({"input_ids": [[128000, 71, 128256, -3]]}, tokenizer), "TG307")
    assert finding.values == {"rows": [0], "positions": [[2, 3]], "ids": [128256, -3]}
    assert finding.message.endswith("ids must be below the tokenizer's 128256 ids")


# --- TG308 ---------------------------------------------------------------------------------------------


def test_tg308_right_padded_prompts_and_left_padding_fixes_them(qwen3: Pair) -> None:
    model, tokenizer = qwen3
    prompts = chat(tokenizer, "Who are you?", "Hi", generation_prompt=True)
    with setting(tokenizer, padding_side="right"):
        right = tokenizer(prompts, padding=True, return_tensors="pt")
    report = check_batch(right, tokenizer, model)
    assert codes(report) == ["TG308"]
    finding = only(report, "TG308")
    assert finding.message == (
        "row 1 is right-padded, attention 0 after the last attended token (row 1 at 10 positions "
        "[43, 44, 45, 46, 47, ...]): decoder-only generate() appends new tokens after the padding"
    )
    assert finding.values == {"rows": [1], "positions": [[43, 44, 45, 46, 47]], "ids": [151643]}
    assert finding.hint == 'tokenizer.padding_side = "left" before tokenizing prompts for generate()'
    assert codes(check_batch(tokenizer(prompts, padding=True, return_tensors="pt"), tokenizer, model)) == []
    assert codes(check_batch(right, tokenizer, model, purpose="train")) == []  # training batches may pad right


# --- inputs --------------------------------------------------------------------------------------------


def test_missing_attention_mask_infers_edge_padding_only_for_a_dedicated_pad(qwen3: Pair, llama: Pair) -> None:
    model, tokenizer = qwen3
    with setting(tokenizer, padding_side="right"):
        right = tokenizer(chat(tokenizer, "Who are you?", "Hi", generation_prompt=True), padding=True)
    # the pad id is no stop id: its trailing run is padding
    assert codes(check_batch({"input_ids": right["input_ids"]}, tokenizer, model)) == ["TG308"]

    model, tokenizer = llama  # pad == eos: a trailing eos run may be content, so every token counts as real
    with setting(tokenizer, padding_side="right"):
        padded = tokenizer(["Who are you?", "Hi"], padding=True)
    assert codes(check_batch({"input_ids": padded["input_ids"]}, tokenizer, model)) == ["TG302"]
    assert codes(check_batch(padded, tokenizer, model)) == ["TG308"]


def test_purpose_follows_labels_unless_given(llama: Pair) -> None:
    model, tokenizer = llama
    batch = dict(tokenizer(["Who are you?"], return_tensors="pt"))
    assert codes(check_batch(batch, tokenizer, model)) == []  # generate: a prompt needs no eos
    labelled = {**batch, "labels": batch["input_ids"].clone()}
    assert codes(check_batch(labelled, tokenizer, model)) == ["TG304"]  # train: rows need an end
    assert codes(check_batch(labelled, tokenizer, model, purpose="generate")) == []
    assert codes(check_batch(batch, tokenizer, model, purpose="train")) == ["TG304"]  # no labels: TG303 skipped


def test_ragged_lists_are_rows_of_their_own_length(llama: Pair) -> None:
    model, tokenizer = llama
    ragged = tokenizer(["<|begin_of_text|>Hi", "Who are you?"])  # no padding: lists of different lengths
    report = check_batch(ragged, tokenizer, model)
    assert codes(report) == ["TG301"]  # and no TG308: the short row is not right-padded
    assert only(report, "TG301").values == {"rows": [0], "positions": [[0, 1]], "ids": [128000]}


def test_max_rows_limits_the_rows_examined(llama: Pair) -> None:
    model, tokenizer = llama
    batch = tokenizer(["Who are you?", "Hi", "<|begin_of_text|>Hi"], padding=True, return_tensors="pt")
    assert codes(check_batch(batch, tokenizer, model, max_rows=2)) == []
    assert only(check_batch(batch, tokenizer, model, max_rows=3), "TG301").values["rows"] == [2]
    assert codes(check_batch(batch, tokenizer, model, max_rows=0)) == []


def test_processor_carrying_the_tokenizer_gives_the_same_report(mistral: Pair) -> None:
    model, tokenizer = mistral

    class Processor:  # what ProcessorMixin exposes: the tokenizer as an attribute
        def __init__(self, tok: object) -> None:
            self.tokenizer = tok

    batch = tokenizer(["<s>Hi", "Who"], padding=True, return_tensors="pt")
    direct = check_batch(batch, tokenizer, model)
    assert codes(direct) == ["TG301"]
    assert check_batch(batch, Processor(tokenizer), model).to_dict() == direct.to_dict()


def test_model_only_takes_bos_eos_from_the_config_and_names_ids_without_strings(llama: Pair) -> None:
    model, _ = llama
    report = check_batch({"input_ids": [[128000, 128000, 128256, 71, 128001]]}, model=model)
    assert codes(report) == ["TG301", "TG302", "TG307"]
    assert only(report, "TG301").message == "row 0 starts with bos 128000 twice (row 0 at positions [0, 1])"
    assert report.layout.tokenizer is None and report.layout.embedding_rows == 128256


def test_no_tokenizer_and_no_model_checks_nothing_that_needs_ids() -> None:
    report = check_batch({"input_ids": [[1, 1, 5, 2, -7]], "attention_mask": [[1, 1, 1, 0, 1]]})
    assert codes(report) == ["TG305"]  # the mask alone shows the hole; bos, eos and the id range are unknown
    assert report.layout == Report(report.layout).layout and report.layout.model is None


def test_report_layout_is_the_objects_layout_and_serialises(llama: Pair) -> None:
    model, tokenizer = llama
    report = check_batch(tokenizer("<|begin_of_text|>Hi"), tokenizer, model)
    assert report.layout == layout_from_objects(model, tokenizer)
    assert isinstance(report, Report) and isinstance(report.findings[0], StaticFinding)
    assert isinstance(report.findings[0], StaticFinding) and report.findings[0].title == "doubled BOS at a sequence start"
    data = json.loads(json.dumps(report.to_dict()))
    assert data["ok"] is False and data["findings"][0]["field"] == "batch"
    assert "<|begin_of_text|>" in str(report)
    for twin in (copy.deepcopy(report), pickle.loads(pickle.dumps(report))):
        assert type(twin) is Report and twin == report

    alone = check_batch(tokenizer("<|begin_of_text|>Hi"), tokenizer)
    assert alone.layout.model is None and alone.layout.generation is None
    assert alone.layout.tokenizer == {"bos": 128000, "eos": 128001, "pad": 128001}
    assert codes(alone) == ["TG301"]


ODD_BATCHES: list[dict[str, Any]] = [
    {},
    {"input_ids": None},
    {"input_ids": 5},
    {"input_ids": "Hi"},
    {"input_ids": []},
    {"input_ids": [[]]},
    {"input_ids": [["a", "b"]]},
    {"input_ids": [[1.5, 2.0]]},
    {"input_ids": [[1, 2], 3]},
    {"input_ids": [[10**30]]},
    {"input_ids": np.zeros((2, 2, 2), dtype=np.int64)},
    {"input_ids": torch.zeros(2, 2, 2, dtype=torch.long)},
    {"input_ids": torch.tensor([[True, False]])},
    {"input_ids": torch.zeros(2, 3)},
    {"input_ids": torch.zeros(0, 3, dtype=torch.long)},
    {"input_ids": torch.zeros(2, 0, dtype=torch.long)},
    {"input_ids": torch.zeros(2, 3, dtype=torch.uint16)},
    {"input_ids": torch.zeros(2, 3, dtype=torch.long).to_sparse()},
    {"input_ids": torch.zeros(2, 3, dtype=torch.long, device="meta")},
    {"input_ids": [[1, 1, 2]], "attention_mask": [[1, 1]]},
    {"input_ids": [[1, 1, 2]], "attention_mask": [[0.5, 1.0, 1.0]]},
    {"input_ids": [[1, 1, 2]], "attention_mask": "all"},
    {"input_ids": [[1, 1, 2]], "labels": [[1, 2]]},
    {"input_ids": [[1, 1, 2]], "labels": torch.tensor([[1.0, 2.0, 3.0]])},
    {"input_ids": [[1, 1, 2], [1]], "attention_mask": [[1, 1, 1], [1, 1]]},
    {"input_ids": np.array([[1, 1, 2]], dtype=np.uint64), "labels": np.array([[1, 1, 2]], dtype=np.uint64)},
    {"input_ids": torch.tensor([[1, 1, 2]], dtype=torch.int8), "attention_mask": np.array([[True, True, True]])},
]


@pytest.mark.parametrize("batch", ODD_BATCHES, ids=range(len(ODD_BATCHES)))
def test_odd_input_never_raises(batch: dict[str, Any], mistral: Pair) -> None:
    model, tokenizer = mistral
    for purpose in (None, "train", "generate"):
        report = check_batch(batch, tokenizer, model, purpose=purpose)
        assert all(f.code in SEQUENCE_CODES for f in report.findings)


def test_unusable_mask_leaves_only_the_id_range_check(mistral: Pair) -> None:
    model, tokenizer = mistral
    batch = {"input_ids": [[1, 1, 40000]], "attention_mask": [[1, 1]]}
    assert codes(check_batch(batch, tokenizer, model)) == ["TG307"]


def test_wrong_arguments_raise_with_what_to_pass(llama: Pair) -> None:
    _, tokenizer = llama
    with pytest.raises(TypeError, match=r"takes a mapping with 'input_ids'.*got list"):
        check_batch([[1, 2]], tokenizer)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="purpose must be 'train', 'generate' or None"):
        check_batch({"input_ids": [[1]]}, tokenizer, purpose="eval")
    with pytest.raises(ValueError, match="max_rows"):
        check_batch({"input_ids": [[1]]}, tokenizer, max_rows=-1)


# --- properties ----------------------------------------------------------------------------------------

#: smollm2 with a dedicated pad: unk 0, bos 1, eos = end of turn 2, pad 49152; 49153 and -1 are out of range
POOL = [0, 1, 2, 49152, 5, 6, 7, 49153, -1]


@st.composite
def small_batches(draw: st.DrawFn) -> tuple[dict[str, list[list[int]]], str | None]:
    rows, width = draw(st.integers(1, 4)), draw(st.integers(1, 8))
    grid = st.lists(st.lists(st.sampled_from(POOL), min_size=width, max_size=width), min_size=rows, max_size=rows)
    batch = {"input_ids": draw(grid)}
    if draw(st.booleans()):
        batch["attention_mask"] = draw(
            st.lists(st.lists(st.sampled_from([0, 1]), min_size=width, max_size=width), min_size=rows, max_size=rows)
        )
    if draw(st.booleans()):
        batch["labels"] = draw(
            st.lists(st.lists(st.sampled_from([-100, *POOL]), min_size=width, max_size=width), min_size=rows, max_size=rows)
        )
    return batch, draw(st.sampled_from([None, "train", "generate"]))


@PROPERTY
@given(case=small_batches(), dtype=st.sampled_from([torch.int64, torch.int32]))
def test_lists_tensors_and_numpy_arrays_give_identical_findings(
    case: tuple[dict[str, list[list[int]]], str | None], dtype: torch.dtype, smollm2_padded: Pair
) -> None:
    _, tokenizer = smollm2_padded
    batch, purpose = case
    as_lists = check_batch(batch, tokenizer, purpose=purpose)
    tensors = {k: torch.tensor(v, dtype=dtype if k != "attention_mask" else torch.int64) for k, v in batch.items()}
    arrays = {k: np.asarray(v, dtype=np.int32) for k, v in batch.items()}
    expected = [f.to_dict() for f in as_lists.findings]
    assert [f.to_dict() for f in check_batch(tensors, tokenizer, purpose=purpose).findings] == expected
    assert [f.to_dict() for f in check_batch(arrays, tokenizer, purpose=purpose).findings] == expected


PLAIN_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="<[|"), max_size=12)


@PROPERTY
@given(texts=st.lists(PLAIN_TEXT, min_size=1, max_size=4), family=st.sampled_from(["llama", "qwen3"]))
def test_tokenizer_built_left_padded_batches_have_no_sequence_faults(
    texts: list[str], family: str, llama: Pair, qwen3: Pair
) -> None:
    model, tokenizer = {"llama": llama, "qwen3": qwen3}[family]
    assume(any(texts))
    batch = tokenizer(texts, add_special_tokens=False, padding=True, return_tensors="pt")
    assert tokenizer.padding_side == "left"
    for purpose in ("train", "generate"):
        found = set(codes(check_batch(batch, tokenizer, model, purpose=purpose)))
        assert not found & {"TG301", "TG305", "TG307", "TG308"}


@PROPERTY
@given(texts=st.lists(PLAIN_TEXT, min_size=1, max_size=5), data=st.data())
def test_a_second_bos_at_a_row_start_is_always_tg301_naming_that_row(texts: list[str], data: st.DataObject, llama: Pair) -> None:
    model, tokenizer = llama
    row = data.draw(st.integers(0, len(texts) - 1))
    bos = tokenizer.bos_token_id
    rows = [[bos, *tokenizer(text, add_special_tokens=False)["input_ids"]] for text in texts]
    rows[row].insert(0, bos)
    batch = tokenizer.pad({"input_ids": rows}, return_tensors="pt")
    finding = only(check_batch(batch, tokenizer, model), "TG301")
    assert finding.values["rows"] == [row]
    start = batch["input_ids"].shape[1] - len(rows[row])
    assert finding.values["positions"] == [[start, start + 1]]


# --- performance ---------------------------------------------------------------------------------------


class TorchCalls(TorchFunctionMode):
    """Records every torch function and tensor method a block calls."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __torch_function__(
        self, func: Callable[..., Any], types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        self.names.append(getattr(func, "__name__", str(func)))
        return func(*args, **(kwargs or {}))


def _batch(width: int, tokenizer: Any, purpose: str, *, faulty: bool) -> dict[str, torch.Tensor]:
    """8 x ``width``, left-padded by 3, starting with bos; a training batch ends in eos."""
    generator = torch.Generator().manual_seed(width)
    ids = torch.randint(300, 5000, (8, width), generator=generator)
    mask = torch.ones_like(ids)
    mask[:, :3] = 0
    ids[:, :3] = tokenizer.pad_token_id
    ids[:, 3] = tokenizer.bos_token_id
    if purpose == "train" or faulty:
        ids[:, -1] = tokenizer.eos_token_id
    labels = torch.where(mask.bool(), ids, -100)
    if faulty:  # a doubled bos, a hole, an id out of range; eos masked (train) or right padding (generate)
        ids[:, 4] = tokenizer.bos_token_id
        mask[:, 8] = 0
        ids[:, 9] = 10**6
        labels[:, -1] = -100
        if purpose == "generate":
            mask[0, -2:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


@pytest.mark.parametrize("faulty", [False, True], ids=["clean", "faulty"])
def test_checks_are_vectorised_and_copy_no_cpu_tensor(faulty: bool, llama: Pair) -> None:
    """The same torch calls for 8 x 16 and 8 x 512 (nothing loops over tokens), none of them a copy. Timings
    are the benchmark's (benchmarks/sequence_checks.py)."""
    model, tokenizer = llama
    calls: dict[int, list[str]] = {}
    findings: dict[int, list[str]] = {}
    for width in (16, 512):
        for purpose in ("train", "generate"):
            batch = _batch(width, tokenizer, purpose, faulty=faulty)
            with TorchCalls() as recorder:
                report = check_batch(batch, tokenizer, model, purpose=purpose)
            calls.setdefault(width, []).extend(recorder.names)
            findings.setdefault(width, []).extend(report.codes())
    assert calls[16] == calls[512]
    assert not {"clone", "copy_", "cpu", "to", "contiguous", "numpy", "__deepcopy__"} & set(calls[512])
    # the hole at position 8 keeps its label: TG309 (labels on padding)
    train, generate = ["TG301", "TG303", "TG305", "TG307", "TG309"], ["TG301", "TG302", "TG305", "TG307", "TG308"]
    expected = [*train, *generate] if faulty else []
    assert findings[16] == findings[512] == expected
