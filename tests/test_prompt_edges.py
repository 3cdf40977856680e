"""What the model sees at the edges of a sequence, predicted statically: a doubled BOS (TG301) and an eos
appended to every prompt (TG302). Real cases (data in tests/data/cases), siblings, and a property that the
prediction equals what tokenizing the rendered conversation actually gives."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from tokenizers import processors
from transformers import AutoConfig, AutoTokenizer, GenerationConfig

from pytest_tokenguard import check_special_tokens, read_folder
from pytest_tokenguard.cli import main
from pytest_tokenguard.static.checks import check_layout
from pytest_tokenguard.suite import zoo
from pytest_tokenguard.suite.strategies import build_layout, special_token_layouts

CASES = Path(__file__).parent / "data" / "cases"
PLAIN_TEMPLATE = "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}"
CONVERSATION = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi there"}]


def codes(findings: Any) -> set[tuple[str, str, str]]:
    return {(f.code, f.field, f.severity) for f in findings}


def loaded(folder: Path) -> tuple[Any, Any, Any]:
    """The folder as transformers loads it (config, tokenizer, generation config): what a user's script holds."""
    return AutoConfig.from_pretrained(folder), AutoTokenizer.from_pretrained(folder), GenerationConfig.from_pretrained(folder)


@pytest.mark.parametrize(
    ("case", "code", "field"),
    [("double-bos", "TG301", "bos"), ("eos-appended-to-prompts", "TG302", "eos")],
)
def test_case_folder_and_loaded_objects_report_the_same_prompt_edge(
    case: str, code: str, field: str, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = CASES / case
    assert main(["check", str(folder)]) == 1
    out = capsys.readouterr().out
    assert f"{code} error:" in out
    from_folder = codes(check_layout(read_folder(folder).layout).findings)
    config, tokenizer, generation = loaded(folder)
    from_objects = codes(check_special_tokens(config, tokenizer, generation).findings)
    assert (code, field, "error") in from_folder
    assert from_folder == from_objects
    # the truth: what the user's script gets from the tokenizer
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    if code == "TG301":
        ids = tokenizer(tokenizer.apply_chat_template(CONVERSATION, tokenize=False))["input_ids"]
        assert ids[:2] == [bos, bos]
    else:
        assert tokenizer("[INST] What is the capital of Taiwan [/INST]")["input_ids"][-1] == eos


def test_double_bos_survives_align_special_tokens() -> None:
    from pytest_tokenguard import align_special_tokens

    config, tokenizer, generation = loaded(CASES / "double-bos")

    class Model:  # the alignment helper needs a model: a stand-in carrying the loaded configs
        def __init__(self) -> None:
            self.config, self.generation_config = config, generation

    model = Model()
    align_special_tokens(model, tokenizer)
    assert ("TG301", "bos", "error") in codes(check_special_tokens(model.config, tokenizer, model.generation_config).findings)


def _with_post_processor(tokenizer: Any, bos: str | None, eos: str | None) -> Any:
    """What Llama-3 / Mistral fast tokenizers ship: a TemplateProcessing post-processor adding bos and/or eos."""
    single = " ".join([*(["BOS"] if bos else []), "$A", *(["EOS"] if eos else [])])
    pair = single + " $B"
    specials = [
        *([("BOS", tokenizer.convert_tokens_to_ids(bos))] if bos else []),
        *([("EOS", tokenizer.convert_tokens_to_ids(eos))] if eos else []),
    ]
    template = processors.TemplateProcessing(
        single=single.replace("BOS", bos or "").replace("EOS", eos or ""),
        pair=pair.replace("BOS", bos or "").replace("EOS", eos or ""),
        special_tokens=[(bos if name == "BOS" else eos, i) for name, i in specials],
    )
    tokenizer.backend_tokenizer.post_processor = template
    return tokenizer


@pytest.mark.parametrize(
    ("family", "template_bos"),
    [("llama-3.2-1b", "{{- bos_token }}"), ("gemma-2-2b-it", "{{ bos_token }}")],
)
def test_siblings_llama3_and_gemma_template_bos_with_a_bos_adding_tokenizer(
    family: str, template_bos: str, tmp_path: Path
) -> None:
    model, tokenizer = zoo.build(family)
    base_template = tokenizer.chat_template or PLAIN_TEMPLATE  # Llama-3.2-1B (base) ships none
    _with_post_processor(tokenizer, tokenizer.bos_token, None)
    tokenizer.chat_template = template_bos + base_template
    assert tokenizer(tokenizer.apply_chat_template(CONVERSATION, tokenize=False))["input_ids"][:2] == [tokenizer.bos_token_id] * 2
    assert ("TG301", "bos", "error") in codes(check_special_tokens(model, tokenizer).findings)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    assert ("TG301", "bos", "error") in codes(check_layout(read_folder(tmp_path).layout).findings)
    # the template alone, or the tokenizer alone, is no fault
    plain = zoo.build(family)[1]
    plain.chat_template = template_bos + base_template
    assert "TG301" not in {f.code for f in check_special_tokens(model, plain).findings}


def test_sibling_mistral_tokenizer_appending_eos(tmp_path: Path) -> None:
    model, tokenizer = zoo.build("mistral-7b-instruct-v0.3")
    _with_post_processor(tokenizer, tokenizer.bos_token, tokenizer.eos_token)
    assert tokenizer("[INST] hi [/INST]")["input_ids"][-1] == tokenizer.eos_token_id
    assert ("TG302", "eos", "error") in codes(check_special_tokens(model, tokenizer).findings)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    assert ("TG302", "eos", "error") in codes(check_layout(read_folder(tmp_path).layout).findings)


TEMPLATE_WITH_BOS = "{{ bos_token }}"


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    layout=special_token_layouts(allow_out_of_range=False),
    template_bos=st.booleans(),
    adds_bos=st.booleans(),
    adds_eos=st.booleans(),
)
def test_prediction_equals_what_tokenizing_gives(
    layout: dict[str, Any], template_bos: bool, adds_bos: bool, adds_eos: bool, tmp_path_factory: pytest.TempPathFactory
) -> None:
    assume(layout["generation"] is not None)  # save_pretrained needs a generation config to save
    tok = layout["tokenizer"]
    assume(tok["end_of_turn"] is None or tok["end_of_turn"] != tok["bos"])  # no real template ends turns with bos
    model, tokenizer, generation = build_layout(layout)
    bos, eos = tokenizer.bos_token, tokenizer.eos_token
    _with_post_processor(tokenizer, bos if adds_bos else None, eos if adds_eos else None)
    if tokenizer.chat_template is None:
        tokenizer.chat_template = PLAIN_TEMPLATE
    if template_bos:
        tokenizer.chat_template = TEMPLATE_WITH_BOS + tokenizer.chat_template
    rendered = tokenizer.apply_chat_template(CONVERSATION, tokenize=False)
    ids = tokenizer(rendered)["input_ids"]  # what an SFT script trains on
    own = tokenizer(rendered, add_special_tokens=False)["input_ids"]  # the text's own ids
    # where the tiny vocabulary spells none of the words, a bos in front and an eos behind the bare specials look
    # the same (bos == eos layouts): nothing to observe
    assume(any(i not in (tokenizer.bos_token_id, tokenizer.eos_token_id) for i in own))
    # doubled: the rendered text starts with the bos string and the tokenizer puts another bos in front of it
    bos_id = tokenizer.bos_token_id
    doubled = bos_id is not None and rendered.startswith(bos) and own[:1] == [bos_id] and ids[: len(own) + 1] == [bos_id, *own]
    # appended: eos after the text's own ids, i.e. added by the tokenizer (a text the tiny vocabulary cannot
    # encode at all has no own ids: everything the tokenizer returns was added)
    end = min((i + len(own) for i in range(len(ids) - len(own) + 1) if own and ids[i : i + len(own)] == own), default=0)
    appended = tokenizer.eos_token_id is not None and tokenizer.eos_token_id in ids[end:]
    from_objects = {f.code for f in check_special_tokens(model, tokenizer, generation).findings}
    assert ("TG301" in from_objects) == doubled, (rendered, ids[:3])
    assert ("TG302" in from_objects) == appended, (rendered, ids[-3:])
    folder = tmp_path_factory.mktemp("edges")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    from_folder = {f.code for f in check_layout(read_folder(folder).layout).findings}
    assert ("TG301" in from_folder, "TG302" in from_folder) == ("TG301" in from_objects, "TG302" in from_objects)
    shutil.rmtree(folder)
