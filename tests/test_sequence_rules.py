"""Sequence rules of issue 15 (TG309-TG312, TG303's cause) on batches built by tiny offline tokenizers and models:
labels on padding, placeholder ids as labels (each source of the id), the end of turn left out by the loss mask, the
bos a base model expects, dropped, and preference completions ending in a doubled eos or none."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, LlavaConfig, Qwen2VLConfig

from pytest_tokenguard.static.checks import StaticFinding
from pytest_tokenguard.static.sequences import (
    LOSS_MASK_HINT,
    SEQUENCE_CODES,
    check_batch,
    check_fields,
    field_kind,
    placeholder_ids,
    token_fields,
)
from pytest_tokenguard.suite import zoo

PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
TINY: dict[str, Any] = dict(
    hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1
)


def _ckpt() -> ModuleType:
    """The cases' tiny-tokenizer helper (tests/data/cases/_lib/ckpt.py, copied from the shared cases)."""
    path = Path(__file__).parent / "data" / "cases" / "_lib" / "ckpt.py"
    spec = importlib.util.spec_from_file_location("tokenguard_cases_ckpt", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ckpt = _ckpt()


def only(report: Any, code: str) -> StaticFinding:
    found: list[StaticFinding] = [f for f in report.findings if f.code == code]
    (finding,) = found
    return finding


def llama_tokenizer(*, bos: bool, eos: bool = False, padding_side: str = "right", **kwargs: Any) -> Any:
    """Llama-2 layout: <unk> 0 (also the pad), <s> 1, </s> 2; ``bos`` / ``eos``: the tokenizer adds them."""
    return ckpt.tiny_tokenizer(
        {0: "<unk>", 1: "<s>", 2: "</s>", 10: "<image>"},
        320,
        bos="<s>",
        eos="</s>",
        unk="<unk>",
        pad="<unk>",
        padding_side=padding_side,
        post_bos="<s>" if bos else None,
        post_eos="</s>" if eos else None,
        **kwargs,
    )


@pytest.fixture(scope="module")
def llama() -> Any:
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=320, head_dim=8, bos_token_id=1, eos_token_id=2, pad_token_id=0, **TINY))


def test_code_table_tg309_to_tg312() -> None:
    new = {code: c for code, c in SEQUENCE_CODES.items() if code >= "TG309"}
    assert {code: c.severity for code, c in new.items()} == {
        "TG309": "error",
        "TG310": "error",
        "TG311": "error / warning",
        "TG312": "error",
    }
    assert "labels[attention_mask == 0] = -100" in new["TG309"].hint
    assert "labels[labels == image_token_id] = -100" in new["TG310"].hint
    assert "post-processor" in new["TG311"].hint and "add_bos_token=True" in new["TG311"].hint
    assert "one eos" in new["TG312"].hint


# --- TG309 labels on padding -----------------------------------------------------------------------------------


def test_tg309_collator_relabelling_padding_names_rows_positions_and_label(llama: Any) -> None:
    tok = llama_tokenizer(bos=True)
    batch = tok(["Hi</s>", "Who are you?</s>"], padding=True, return_tensors="pt")
    labels = batch["input_ids"].clone()
    labels[labels == tok.pad_token_id] = 10  # the case's fault: padding relabelled with the <image> id
    report = check_batch({**batch, "labels": labels}, tok, llama)
    assert report.codes() == ["TG309", "TG310"]
    finding = only(report, "TG309")
    assert finding.message == (
        "row 0 has labels on padded positions, attention_mask 0 (row 0 at 10 positions [4, 5, 6, 7, 8, ...]), holding "
        "10 '<image>' instead of -100: the loss trains the model on padding"
    )
    assert finding.values == {"rows": [0], "positions": [[4, 5, 6, 7, 8]], "ids": [10]}
    labels[batch["attention_mask"] == 0] = -100
    assert check_batch({**batch, "labels": labels}, tok, llama).codes() == []


@st.composite
def padded_batches(draw: st.DrawFn) -> dict[str, list[list[int]]]:
    rows, width = draw(st.integers(1, 4)), draw(st.integers(1, 5))
    grid = st.lists(st.lists(st.sampled_from([3, 4, 5, 2]), min_size=width, max_size=width), min_size=rows, max_size=rows)
    mask = st.lists(st.lists(st.sampled_from([0, 1]), min_size=width, max_size=width), min_size=rows, max_size=rows)
    labels = st.lists(st.lists(st.sampled_from([-100, 3, 4, 2]), min_size=width, max_size=width), min_size=rows, max_size=rows)
    return {"input_ids": draw(grid), "attention_mask": draw(mask), "labels": draw(labels)}


@PROPERTY
@given(batch=padded_batches(), as_tensors=st.booleans())
def test_tg309_flags_exactly_the_positions_with_attention_0_and_a_label(
    batch: dict[str, list[list[int]]], as_tensors: bool
) -> None:
    expected = {
        row: [p for p, (m, label) in enumerate(zip(mask, labels, strict=True)) if m == 0 and label != -100]
        for row, (mask, labels) in enumerate(zip(batch["attention_mask"], batch["labels"], strict=True))
    }
    expected = {row: positions for row, positions in expected.items() if positions}
    given_batch: Any = {k: torch.tensor(v) for k, v in batch.items()} if as_tensors else batch
    found = [f for f in check_batch(given_batch, purpose="train").findings if f.code == "TG309"]
    if not expected:
        assert found == []
        return
    (finding,) = found
    assert dict(zip(finding.values["rows"], finding.values["positions"], strict=True)) == expected
    assert set(finding.values["ids"]) == {batch["labels"][r][p] for r, ps in expected.items() for p in ps}


# --- TG310 placeholder ids -------------------------------------------------------------------------------------


def test_placeholder_ids_from_each_source() -> None:
    qwen2_vl = Qwen2VLConfig()
    if hasattr(qwen2_vl, "image_token_id"):  # transformers 4.46 kept Qwen2-VL's ids in the model code, not the config
        assert placeholder_ids(qwen2_vl) == {151655: "config.image_token_id", 151656: "config.video_token_id"}
    # image_token_index, read as image_token_id where the config maps it (attribute_map: not in 4.46)
    assert placeholder_ids(LlavaConfig()) in ({32000: "config.image_token_id"}, {32000: "config.image_token_index"})
    nested = SimpleNamespace(text_config=SimpleNamespace(audio_token_index=7), vision_config=SimpleNamespace(image_patch_id=8))
    assert placeholder_ids(nested) == {7: "config.text_config.audio_token_index", 8: "config.vision_config.image_patch_id"}
    named = llama_tokenizer(bos=True, extra_special_tokens={"image_token": "<image>"})
    # named model-specific tokens are transformers 5 (extra_special_tokens); 4.x finds the same id by its spelling
    source = (
        "tokenizer.image_token_id"
        if getattr(named, "image_token_id", None) is not None
        else "the tokenizer: an added special token spelled like a media placeholder"
    )
    assert placeholder_ids(None, named) == {10: source}
    plain = llama_tokenizer(bos=True)  # declares nothing: <image> is only an added special token
    assert placeholder_ids(None, plain) == {10: "the tokenizer: an added special token spelled like a media placeholder"}
    processor = SimpleNamespace(tokenizer=plain, image_token_id=11, video_token="<image>")
    assert placeholder_ids(None, processor) == {
        11: "processor.image_token_id",
        10: "processor.video_token '<image>'",
    }
    plain.add_tokens(["<video>"])  # an added token that is not special is ordinary text
    assert 3 not in placeholder_ids(None, plain) and len(placeholder_ids(None, plain)) == 1


def test_tg310_config_image_token_id_in_attended_labels_says_where_it_was_learned(llama: Any) -> None:
    tok = llama_tokenizer(bos=True)
    llama.config.image_token_id = 12  # a VLM config's placeholder; the tokenizer knows 12 as plain byte-level text
    try:
        batch = {"input_ids": [[1, 12, 12, 40, 2]], "attention_mask": [[1] * 5], "labels": [[-100, 12, 12, 40, 2]]}
        finding = only(check_batch(batch, tok, llama), "TG310")
        assert finding.message.startswith(
            f"labels hold the media placeholder 12 {tok.convert_ids_to_tokens(12)!r}, learned from config.image_token_id "
            "(row 0 at positions [1, 2]): a processor expands the placeholder"
        )
        batch["labels"] = [[-100, -100, -100, 40, 2]]
        assert check_batch(batch, tok, llama).codes() == []
    finally:
        del llama.config.image_token_id


# --- TG303: the cause decides the hint ---------------------------------------------------------------------------


def test_tg303_assistant_only_mask_gets_the_generation_block_hint() -> None:
    model, tok = zoo.build("qwen3-0.6b")  # pad <|endoftext|>, eos = end of turn <|im_end|>: the pad is no stop
    texts = [
        tok.apply_chat_template([{"role": "user", "content": q}, {"role": "assistant", "content": "Ok."}], tokenize=False)
        for q in ("Hi", "Yo")
    ]
    batch = tok(texts, return_tensors="pt")
    labels = batch["input_ids"].masked_fill(batch["input_ids"] == tok.eos_token_id, -100)  # the end of turn left out
    finding = only(check_batch({**batch, "labels": labels}, tok, model), "TG303")
    assert finding.hint == LOSS_MASK_HINT and "{% generation %}" in finding.hint and "assistant_only_loss=False" in finding.hint
    assert ", left out by the loss mask (the pad is no stop id): the model is never trained to stop" in finding.message


# --- TG311 the bos the model expects, dropped ------------------------------------------------------------------


def test_tg311_base_tokenizer_that_lost_its_bos(llama: Any) -> None:
    texts = ["The cat sat.</s>", "Forty years.</s>"]
    dropped = llama_tokenizer(bos=False)(texts, padding=True, return_tensors="pt")
    for purpose in ("train", "generate"):  # fine-tuned or served with it
        finding = only(check_batch(dropped, llama_tokenizer(bos=False), llama, purpose=purpose), "TG311")
        assert finding.severity == "error" and finding.values["rows"] == [0, 1]
    assert finding.message == (
        "rows [0, 1] (2 of 2 rows) start without bos 1 '<s>', which the tokenizer declares and the model config names as "
        "its bos; first real token: row 0 at position 0 (55 'T'); row 1 at position 0 (41 'F'): the model was trained "
        "with sequences that start with bos"
    )
    kept = llama_tokenizer(bos=True)
    assert check_batch(kept(texts, padding=True, return_tensors="pt"), kept, llama, purpose="train").codes() == []


def test_tg311_skips_left_padding_and_warns_on_some_rows(llama: Any) -> None:
    tok = llama_tokenizer(bos=True, padding_side="left")
    left = tok(["Hi", "Who are you?"], padding=True, return_tensors="pt")
    assert "TG311" not in check_batch(left, tok, llama).codes()
    mixed = tok(["Hi", "Who are you?"], padding=True, return_tensors="pt")
    mixed["input_ids"][1, 0] = 40  # row 1 lost its bos
    finding = only(check_batch(mixed, tok, llama), "TG311")
    assert finding.severity == "warning" and finding.values["rows"] == [1]
    assert finding.message.startswith("row 1 (1 of 2 rows) starts without bos 1 '<s>'")


def test_tg311_stays_clean_where_the_family_has_no_bos_at_the_start(llama: Any) -> None:
    batch = {"input_ids": [[40, 41, 2]], "attention_mask": [[1, 1, 1]]}
    phi3_like = llama_tokenizer(bos=False, add_bos_token=False)  # Phi-3 ships add_bos_token: false on purpose
    assert "TG311" not in check_batch(batch, phi3_like, llama, purpose="train").codes()
    model, qwen = zoo.build("qwen3-0.6b")  # no bos in the tokenizer by design
    assert "TG311" not in check_batch(qwen(["Hi<|im_end|>"]), qwen, model, purpose="train").codes()
    model, smol = zoo.build("smollm2-135m-instruct")  # bos <|im_start|> is the template's turn marker
    assert "TG311" not in check_batch(smol(["Hi<|im_end|>"]), smol, model, purpose="train").codes()
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=320, n_embd=16, n_layer=1, n_head=2, bos_token_id=2, eos_token_id=2))
    eos_is_bos = ckpt.tiny_tokenizer({0: "<unk>", 2: "<|endoftext|>"}, 320, bos="<|endoftext|>", eos="<|endoftext|>")
    assert "TG311" not in check_batch(batch, eos_is_bos, gpt2, purpose="train").codes()  # GPT-2: bos == eos
    other = LlamaForCausalLM(LlamaConfig(vocab_size=320, head_dim=8, bos_token_id=3, eos_token_id=2, **TINY))
    assert "TG311" not in check_batch(batch, llama_tokenizer(bos=False), other).codes()  # not the config's bos
    assert "TG311" not in check_batch(batch, None, llama).codes()  # no tokenizer: nothing declares the bos


@PROPERTY
@given(lengths=st.lists(st.integers(1, 6), min_size=1, max_size=4), data=st.data())
def test_tg311_names_exactly_the_rows_whose_first_real_token_is_not_bos(
    lengths: list[int], data: st.DataObject, llama: Any
) -> None:
    tok = llama_tokenizer(bos=True)
    width = max(lengths) + 1
    dropped = data.draw(st.lists(st.booleans(), min_size=len(lengths), max_size=len(lengths)))
    ids, mask = np.zeros((len(lengths), width), dtype=np.int64), np.zeros((len(lengths), width), dtype=np.int64)
    for row, (length, drop) in enumerate(zip(lengths, dropped, strict=True)):
        start = width - length  # left padded
        ids[row, start:] = 40
        ids[row, start] = 40 if drop else 1
        mask[row, start:] = 1
    found = [f for f in check_batch({"input_ids": ids, "attention_mask": mask}, tok, llama).findings if f.code == "TG311"]
    rows = [row for row, drop in enumerate(dropped) if drop]
    if not rows:
        assert found == []
        return
    (finding,) = found
    assert finding.values["rows"] == rows
    assert finding.values["positions"] == [[width - lengths[row]] for row in rows]
    assert finding.severity == ("error" if all(dropped) else "warning")


# --- TG312 preference completions ------------------------------------------------------------------------------


def dpo_batch(completions: list[list[int]], prompt: tuple[int, ...] = (1, 40, 41)) -> dict[str, torch.Tensor]:
    """trl 1.x DPO shape: input_ids = prompt + completion, right-padded with 0, completion_mask on the completion."""
    width = len(prompt) + max(map(len, completions))
    ids, att, comp = (torch.zeros(len(completions), width, dtype=torch.long) for _ in range(3))
    for row, completion in enumerate(completions):
        sequence = [*prompt, *completion]
        ids[row, : len(sequence)] = torch.tensor(sequence)
        att[row, : len(sequence)] = 1
        comp[row, len(prompt) : len(sequence)] = 1
    return {"input_ids": ids, "attention_mask": att, "completion_mask": comp}


def test_tg312_doubled_spaced_and_missing_eos_in_one_finding(llama: Any) -> None:
    tok = llama_tokenizer(bos=True)
    newline = tok.convert_tokens_to_ids("\u010a")  # byte-level "\n"
    batch = dpo_batch([[50, 2, 2], [50, 2, newline, 2], [50, 51], [50, 2]])
    report = check_batch(batch, tok, llama)
    assert report.codes() == ["TG312"]  # no TG304 for completion fields: TG312 says where the completion ends
    finding = only(report, "TG312")
    assert finding.message == (
        "rows [0, 1] end the completion with eos 2 '</s>' twice (row 0 at positions [4, 5]; row 1 at positions [4, 6] "
        "('\\n' between)): the model is trained to emit an end after the end; row 2 ends the completion without eos 2 "
        "'</s>'; last real token: row 2 at position 4 (51 'P'): the model is not trained to stop after it"
    )
    assert finding.values["rows"] == [0, 1, 2]
    assert check_batch(dpo_batch([[50, 2], [50, 51, 2]]), tok, llama).codes() == []


def test_tg312_chatml_completion_ending_in_end_of_turn_then_newline_is_one_end() -> None:
    model, tok = zoo.build("qwen3-0.6b")
    end = tok("Ok.<|im_end|>\n", add_special_tokens=False)["input_ids"]
    assert check_batch(dpo_batch([end, end], prompt=(40, 41)), tok, model).codes() == []
    doubled = tok("Ok.<|im_end|>\n<|im_end|>\n", add_special_tokens=False)["input_ids"]
    assert only(check_batch(dpo_batch([end, doubled], prompt=(40, 41)), tok, model), "TG312").values["rows"] == [1]


def test_orpo_shaped_fields_each_checked_with_their_own_labels(llama: Any) -> None:
    tok = llama_tokenizer(bos=True)
    batch = {
        "prompt_input_ids": torch.tensor([[0, 1, 40], [1, 41, 42]]),
        "prompt_attention_mask": torch.tensor([[0, 1, 1], [1, 1, 1]]),
        "chosen_input_ids": torch.tensor([[1, 40, 50, 2, 2], [1, 41, 42, 50, 2]]),
        "chosen_attention_mask": torch.ones(2, 5, dtype=torch.long),
        "chosen_labels": torch.tensor([[-100, -100, 50, 2, 2], [-100, -100, -100, 50, 2]]),
        "rejected_input_ids": torch.tensor([[1, 40, 51, 2, 0], [1, 41, 42, 51, 2]]),
        "rejected_attention_mask": torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]),
        "rejected_labels": torch.tensor([[-100, -100, 51, 2, 10], [-100, -100, -100, 51, 2]]),
        "prompt": ["a", "b"],
    }
    assert list(token_fields(batch)) == ["chosen_", "prompt_", "rejected_"]
    assert [field_kind(p) for p in token_fields(batch)] == ["completion", "prompt", "completion"]
    reports = check_fields(batch, tok, llama)
    assert {prefix: report.codes() for prefix, report in reports.items()} == {
        "chosen_": ["TG312"],
        "prompt_": [],
        "rejected_": ["TG309", "TG310"],
    }
    assert only(reports["chosen_"], "TG312").values["rows"] == [0]


def test_token_fields_are_2d_integer_keys_with_their_companions() -> None:
    batch = {
        "input_ids": [[1, 2], [3, 4]],
        "labels": [[1, 2], [3, 4]],
        "pixel_values": torch.zeros(2, 3, 4, 4),
        "ref_input_ids": torch.zeros(2, 3),  # floats: no token field
        "flat_input_ids": torch.tensor([1, 2]),  # 1-D: none either
        "label": torch.tensor([True, False]),
    }
    assert token_fields(batch) == {"": {"input_ids": "input_ids", "labels": "labels"}}
    with pytest.raises(TypeError, match="check_fields"):
        check_fields([[1, 2]])  # type: ignore[arg-type]


def test_check_batch_refuses_a_batch_of_prefixed_fields_and_check_fields_checks_them() -> None:
    # a user found check_batch() clean on an ORPO-style batch (prompt_/chosen_/rejected_ fields): it checked nothing
    eos = 2
    batch = {
        "prompt_input_ids": [[1, 5, 6]],
        "chosen_input_ids": [[1, 5, 6, 7, eos]],
        "chosen_labels": [[-100, -100, -100, 7, eos]],
        "rejected_input_ids": [[1, 5, 6, 8, eos, eos]],
        "rejected_labels": [[-100, -100, -100, 8, eos, eos]],
    }
    tokenizer = llama_tokenizer(bos=True)
    with pytest.raises(ValueError) as raised:
        check_batch(batch, tokenizer)
    assert str(raised.value) == (
        "check_batch() found no 'input_ids' but the token fields ['chosen_input_ids', 'prompt_input_ids', "
        "'rejected_input_ids']: check them all with check_fields(batch, tokenizer, model), or one with "
        "check_batch(batch, ..., prefix='chosen_')"
    )
    reports = check_fields(batch, tokenizer)
    assert list(reports) == ["chosen_", "prompt_", "rejected_"]
    assert reports["chosen_"].codes() == [] and reports["prompt_"].codes() == []
    assert reports["rejected_"].codes() == ["TG312"]
    assert check_batch(batch, tokenizer, prefix="rejected_").codes() == ["TG312"]
