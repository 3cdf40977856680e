"""TG215: a tokenizer that declares the model config's bos yet no longer puts it at the start (a re-uploaded
tokenizer whose ``tokenizer.json`` lost its TemplateProcessing post-processor, a SentencePiece-only tokenizer saved
with ``add_bos_token: false``) while the chat template does not write it either. Each verdict is checked against
what the installed tokenizer produces (``tokenizer(text).input_ids[0]``, ``apply_chat_template`` output), and the
folder check agrees with the object API."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path
from typing import Any

import pytest
from tokenizers import processors

from pytest_tokenguard import check_special_tokens, read_folder
from pytest_tokenguard.cli import main
from pytest_tokenguard.static.checks import STATIC_CODES, check_layout
from pytest_tokenguard.suite import zoo
from tests.test_generation_blocks import tiny_tokenizer

CONVERSATION = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi there"}]
PLAIN_TEMPLATE = "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}"
TG215 = ("TG215", "bos", "warning")


def codes(report: Any) -> set[tuple[str, str, str]]:
    return {(f.code, f.field, f.severity) for f in report.findings}


def llama3_post_processor(tokenizer: Any, *, keep_bos: bool) -> Any:
    """What Llama-3's tokenizer.json ships, ``Sequence[ByteLevel, TemplateProcessing(<|begin_of_text|> $A)]``, or,
    re-uploaded after a lossy conversion, the ByteLevel part alone."""
    byte_level = processors.ByteLevel(trim_offsets=False)
    if keep_bos:
        bos = tokenizer.bos_token
        template = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B:1", special_tokens=[(bos, tokenizer.bos_token_id)]
        )
        tokenizer.backend_tokenizer.post_processor = processors.Sequence([byte_level, template])
    else:
        tokenizer.backend_tokenizer.post_processor = byte_level
    return tokenizer


def save(config: Any, tokenizer: Any, generation: Any, folder: Path) -> Path:
    """Configs and tokenizer files only: what the check reads for these codes (no weights needed)."""
    config.save_pretrained(folder)
    generation.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def starts_with_bos(tokenizer: Any) -> bool:
    """The truth for plain text: what ``tokenizer(text)`` (the default, add_special_tokens=True) gives."""
    return bool(tokenizer("hello there")["input_ids"][0] == tokenizer.bos_token_id)


def chat_starts_with_bos(tokenizer: Any) -> bool:
    ids = tokenizer.apply_chat_template(CONVERSATION, tokenize=True, return_dict=True)["input_ids"]
    return bool(ids[0] == tokenizer.bos_token_id)


@pytest.mark.parametrize("keep_bos", [False, True], ids=["bos-lost", "bos-kept"])
def test_llama3_tokenizer_that_lost_its_post_processor(
    keep_bos: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, tokenizer = zoo.build("llama-3.2-1b")
    llama3_post_processor(tokenizer, keep_bos=keep_bos)
    assert starts_with_bos(tokenizer) is keep_bos  # the truth: 128000 first, or not
    from_objects = check_special_tokens(model, tokenizer)
    folder = save(model.config, tokenizer, model.generation_config, tmp_path)
    from_folder = check_layout(read_folder(folder).layout)
    assert codes(from_folder) == codes(from_objects)
    assert (TG215 in codes(from_objects)) is not keep_bos
    assert codes(from_objects) - {TG215} == {("TG207", "pad", "warning")}
    assert main(["check", str(folder)]) == 0  # a warning: reported, not failing
    out = capsys.readouterr().out
    if keep_bos:
        assert "TG215" not in out
        return
    assert "TG215 warning: the tokenizer declares bos 128000 '<|begin_of_text|>', the model config's bos" in out
    (finding,) = [f for f in from_folder.findings if f.code == "TG215"]
    assert finding.values == {"model": 128000, "tokenizer": 128000}
    assert "there is no chat template" in finding.message
    assert main(["check", str(folder), "--strict"]) == 1
    capsys.readouterr()


def test_a_template_that_writes_bos_is_clean_for_chat(tmp_path: Path) -> None:
    model, tokenizer = zoo.build("llama-3.2-1b")
    llama3_post_processor(tokenizer, keep_bos=False)
    tokenizer.chat_template = "{{ bos_token }}" + PLAIN_TEMPLATE
    assert not starts_with_bos(tokenizer) and chat_starts_with_bos(tokenizer)
    from_objects = check_special_tokens(model, tokenizer)
    assert TG215 not in codes(from_objects)
    assert codes(check_layout(read_folder(save(model.config, tokenizer, model.generation_config, tmp_path)).layout)) == codes(
        from_objects
    )
    # a template that does not write it: the finding again, naming the template
    tokenizer.chat_template = PLAIN_TEMPLATE
    assert not chat_starts_with_bos(tokenizer)
    (finding,) = [f for f in check_special_tokens(model, tokenizer).findings if f.code == "TG215"]
    assert "nor the chat template puts it at the start" in finding.message


@pytest.mark.parametrize("family", ["qwen3-0.6b", "qwen3-0.6b-base", "gpt2", "mistral-7b-instruct-v0.3", "gemma-2-2b-it"])
def test_families_without_a_leading_bos_by_design_or_with_a_template_bos_are_clean(family: str, tmp_path: Path) -> None:
    """Qwen: no tokenizer bos; GPT-2: the bos is the eos (a separator); Mistral/Gemma: the template writes bos."""
    model, tokenizer = zoo.build(family)
    from_objects = check_special_tokens(model, tokenizer)
    assert TG215 not in codes(from_objects)
    if tokenizer.bos_token_id is not None and tokenizer.chat_template:
        assert chat_starts_with_bos(tokenizer)
    folder = save(model.config, tokenizer, model.generation_config, tmp_path)
    assert codes(check_layout(read_folder(folder).layout)) == codes(from_objects)


@pytest.mark.parametrize("add_bos", [False, True])
def test_sentencepiece_tokenizer_saved_with_add_bos_token_false(add_bos: bool, tmp_path: Path) -> None:
    pytest.importorskip("google.protobuf", reason="transformers converts tokenizer.model with protobuf")
    import transformers

    from tests.test_sentencepiece_only import FAMILIES, object_findings, sentencepiece_folder

    family = FAMILIES["llama-2"]
    family = dataclasses.replace(family, tokenizer_config={**family.tokenizer_config, "add_bos_token": add_bos})
    folder = sentencepiece_folder(tmp_path / "llama-2", family)
    tokenizer, objects = object_findings(folder, family)
    assert starts_with_bos(tokenizer) is add_bos  # LlamaTokenizer from tokenizer.model honours the flag
    from_folder = check_layout(read_folder(folder).layout)
    assert [f.to_dict() for f in from_folder.findings] == objects
    assert (TG215 in codes(from_folder)) is not add_bos
    assert codes(from_folder) - {TG215} == {("TG207", "pad", "warning")}
    # saved again by transformers (now with tokenizer.json): the same verdict from the post-processor
    resaved = tmp_path / "resaved"
    tokenizer.save_pretrained(resaved)
    transformers.AutoConfig.from_pretrained(folder).save_pretrained(resaved)
    reloaded = transformers.AutoTokenizer.from_pretrained(resaved)
    assert starts_with_bos(reloaded) is add_bos
    assert (TG215 in codes(check_layout(read_folder(resaved).layout))) is not add_bos


def test_encoder_decoders_are_not_checked() -> None:
    from transformers import BartConfig

    tokenizer = tiny_tokenizer(["<s>", "</s>", "<pad>"], bos="<s>", eos="</s>")
    config = BartConfig(vocab_size=300, bos_token_id=256, eos_token_id=257, pad_token_id=258, decoder_start_token_id=257)
    assert "TG215" not in check_special_tokens(config, tokenizer).codes()


def test_code_is_in_the_table() -> None:
    assert STATIC_CODES["TG215"].severity == "warning"
    assert "add_bos_token" in STATIC_CODES["TG215"].hint and "post-processor" in STATIC_CODES["TG215"].hint


# ---- every combination: the verdict is what the tokenizer produces ---------------------------------------------

COMBINATIONS = list(
    itertools.product(
        [False, True],  # the post-processor adds the tokenizer's bos
        [None, "plain", "bos"],  # no chat template, one without bos, one that writes {{ bos_token }}
        ["same", "other", "none"],  # the model config's bos vs the tokenizer's
        [False, True],  # the tokenizer's bos is its eos (GPT-2's separator)
        [True, False],  # the tokenizer declares a bos at all
    )
)


@pytest.mark.parametrize(("adds_bos", "template", "config_bos", "bos_is_eos", "tokenizer_bos"), COMBINATIONS)
def test_verdict_matches_what_the_tokenizer_produces(
    adds_bos: bool, template: str | None, config_bos: str, bos_is_eos: bool, tokenizer_bos: bool, tmp_path: Path
) -> None:
    from transformers import GenerationConfig, LlamaConfig

    bos_text = ("</s>" if bos_is_eos else "<s>") if tokenizer_bos else None
    tokenizer = tiny_tokenizer(["<s>", "</s>"], bos=bos_text, eos="</s>")
    tokenizer.chat_template = {None: None, "plain": PLAIN_TEMPLATE, "bos": "{{ bos_token }}" + PLAIN_TEMPLATE}[template]
    if adds_bos and bos_text is not None:
        llama3_post_processor(tokenizer, keep_bos=True)
    bos_id = tokenizer.bos_token_id
    declared = {"same": bos_id if bos_id is not None else 256, "other": 299, "none": None}[config_bos]
    config = LlamaConfig(vocab_size=300, bos_token_id=declared, eos_token_id=257, pad_token_id=None)
    generation = GenerationConfig(bos_token_id=declared, eos_token_id=257)
    # the truth: the tokenizer's bos is the model's and no sequence the tokenizer or template makes starts with it
    expected_bos = bos_id is not None and bos_id == declared and bos_id != tokenizer.eos_token_id
    missing = not starts_with_bos(tokenizer) and (tokenizer.chat_template is None or not chat_starts_with_bos(tokenizer))
    from_objects = check_special_tokens(config, tokenizer, generation)
    assert ("TG215" in from_objects.codes()) == (expected_bos and missing), (adds_bos, template, config_bos, bos_is_eos)
    assert codes(check_layout(read_folder(save(config, tokenizer, generation, tmp_path)).layout)) == codes(from_objects)
