"""TG214: a chat template with ``{% generation %}`` blocks whose end of turn lies outside them (trl's
``assistant_only_loss=True`` never trains it). The verdict is checked against the installed transformers'
``apply_chat_template(..., return_assistant_tokens_mask=True)`` (is the end-of-turn id among the masked tokens?) and
trl's ``is_chat_template_stop_token_trained``: on the real case (tests/data/cases/assistant-only-loss-end-of-turn),
its fixed template, every training template trl ships, and a property over generated templates. The folder check
and the object API agree."""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from pytest_tokenguard import check_special_tokens, read_folder
from pytest_tokenguard.cli import main
from pytest_tokenguard.static import chat_template
from pytest_tokenguard.static.checks import STATIC_CODES, check_layout

CASE = Path(__file__).parent / "data" / "cases" / "assistant-only-loss-end-of-turn"
ENDOFTEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
#: the case's template, as its tokenizer_config.json ships it: <|im_end|> after {% endgeneration %}
CASE_TEMPLATE = json.loads((CASE / "tokenizer_config.json").read_text(encoding="utf-8"))["chat_template"]
#: the same with <|im_end|> inside the block (what trl's training templates do)
FIXED_TEMPLATE = CASE_TEMPLATE.replace(
    "{% endgeneration %}{% else %}{{ m['content'] }}{% endif %}{{ '<|im_end|>\\n' }}",
    "{{ '<|im_end|>' }}{% endgeneration %}{{ '\\n' }}{% else %}{{ m['content'] + '<|im_end|>\\n' }}{% endif %}",
)
#: trl's probe conversation (is_chat_template_stop_token_trained)
PROBE = [{"role": "user", "content": "dummy"}, {"role": "assistant", "content": "dummy"}, {"role": "user", "content": "dummy"}]


def tiny_tokenizer(specials: list[str], *, eos: str | None = None, bos: str | None = None, template: str | None = None) -> Any:
    """A loadable fast tokenizer: the byte alphabet (ids 0-255, no merges), then ``specials`` from id 256."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    backend = Tokenizer(models.BPE(vocab={char: i for i, char in enumerate(alphabet)}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([AddedToken(text, special=True, normalized=False) for text in specials])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=eos, bos_token=bos)
    tokenizer.chat_template = template
    return tokenizer


def chatml(template: str) -> Any:
    """The case's small sibling: <|endoftext|> 256 (pad), <|im_start|> 257, <|im_end|> 258 (eos)."""
    tokenizer = tiny_tokenizer([ENDOFTEXT, IM_START, IM_END], eos=IM_END, template=template)
    tokenizer.pad_token = ENDOFTEXT
    return tokenizer


def qwen3_config() -> Any:
    import transformers
    from transformers import GenerationConfig

    # Qwen3 where this transformers has it (>= 4.51), else Qwen2: the same special-token fields
    config_class = getattr(transformers, "Qwen3Config", transformers.Qwen2Config)
    config = config_class(vocab_size=320, bos_token_id=256, eos_token_id=258, pad_token_id=256)
    return config, GenerationConfig(bos_token_id=256, eos_token_id=[258, 256], pad_token_id=256)


def masked_ids(tokenizer: Any, messages: list[dict[str, Any]] = PROBE, template: str | None = None) -> list[int]:
    """The ids transformers puts in the assistant mask."""
    out = tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True, chat_template=template
    )
    return [token for token, masked in zip(out["input_ids"], out["assistant_masks"], strict=True) if masked]


def stop_token_trained(tokenizer: Any, template: str | None = None) -> bool | None:
    """trl's own verdict, where the installed trl has it."""
    try:
        from trl.chat_template_utils import is_chat_template_stop_token_trained
    except ImportError:
        return None
    verdict: bool = is_chat_template_stop_token_trained(tokenizer, chat_template=template)
    return verdict


def codes(report: Any) -> set[tuple[str, str, str]]:
    return {(f.code, f.field, f.severity) for f in report.findings}


def saved(tokenizer: Any, folder: Path) -> Path:
    """``tokenizer`` saved beside the tiny Qwen3 config: a folder ``tokenguard check`` reads."""
    config, generation = qwen3_config()
    config.save_pretrained(folder)
    generation.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_case_folder_reports_tg214_and_the_object_api_agrees(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(CASE), "--format", "json"]) == 1
    report = json.loads(capsys.readouterr().out)
    (finding,) = [f for f in report["findings"] if f["code"] == "TG214"]
    assert finding["severity"] == "error" and finding["field"] == "end_of_turn"
    assert finding["values"] == {"chat_template": 151645}
    assert "'<|im_end|>'" in finding["message"] and "{% generation %}" in finding["hint"]
    layout = read_folder(CASE).layout
    assert layout.assistant_mask_end_of_turn == (IM_END, 151645, False)
    from_folder = codes(check_layout(layout))
    assert from_folder == {("TG201", "bos", "warning"), ("TG206", "pad", "warning"), ("TG214", "end_of_turn", "error")}

    # the object API on the case's small sibling (same template, same layout at small ids)
    tokenizer = chatml(CASE_TEMPLATE)
    config, generation = qwen3_config()
    report_objects = check_special_tokens(config, tokenizer, generation)
    assert report_objects.layout.assistant_mask_end_of_turn == (IM_END, 258, False)
    assert codes(report_objects) == from_folder
    # the truth: transformers' mask has the answer's characters and no <|im_end|>; trl agrees
    masked = masked_ids(tokenizer)
    assert tokenizer.convert_ids_to_tokens(masked) == list("dummy")
    assert 258 not in masked
    assert stop_token_trained(tokenizer) in (False, None)


def test_fixed_template_is_clean_in_both_paths(tmp_path: Path) -> None:
    tokenizer = chatml(FIXED_TEMPLATE)
    config, generation = qwen3_config()
    report = check_special_tokens(config, tokenizer, generation)
    assert report.layout.assistant_mask_end_of_turn == (IM_END, 258, True)
    assert "TG214" not in report.codes()
    assert 258 in masked_ids(tokenizer)
    assert stop_token_trained(tokenizer) in (True, None)
    folder = check_layout(read_folder(saved(tokenizer, tmp_path)).layout)
    assert folder.layout.assistant_mask_end_of_turn == (IM_END, 258, True)
    assert codes(folder) == codes(report)
    # and the case's template saved the same way: the finding in both
    broken = chatml(CASE_TEMPLATE)
    other = tmp_path / "broken"
    assert codes(check_layout(read_folder(saved(broken, other)).layout)) == codes(
        check_special_tokens(config, broken, generation)
    )
    assert ("TG214", "end_of_turn", "error") in codes(check_special_tokens(config, broken, generation))


def test_code_is_in_the_table() -> None:
    assert STATIC_CODES["TG214"].severity == "error"
    assert "assistant_only_loss=False" in STATIC_CODES["TG214"].hint


# ---- trl's own training templates: discovered from the installed trl, each with its special tokens -------------

#: special-token spellings in trl's templates: <|im_end|>, <end_of_turn>, <turn|>, [INST], and DeepSeek's between
#: fullwidth bars (U+FF5C) with U+2581 for spaces
_SPECIAL = re.compile("<[|\uff5c]?[A-Za-z_/\u2581|\uff5c0-9]{1,40}[|\uff5c]?>|\\[/?INST\\]")


def _trl_training_templates() -> dict[str, str]:
    try:
        from trl import chat_template_utils
    except ImportError:
        return {}
    return {
        name: value
        for name in sorted(dir(chat_template_utils))
        if name.endswith("_training_chat_template") and isinstance(value := getattr(chat_template_utils, name), str)
    }


TRL_TEMPLATES = _trl_training_templates()


@pytest.mark.skipif(not TRL_TEMPLATES, reason="trl with training chat templates is not installed")
@pytest.mark.parametrize("name", sorted(TRL_TEMPLATES) or ["none"])
def test_trl_training_templates_are_clean_and_agree_with_transformers(name: str) -> None:
    template = TRL_TEMPLATES[name]
    specials = sorted(set(_SPECIAL.findall(template)))
    tokenizer = tiny_tokenizer(specials, eos=specials[0], template=template)
    found, note = chat_template.assistant_mask_end_of_turn(template, tokenizer.get_added_vocab(), {"eos_token": specials[0]})
    if found is None:  # only multimodal templates whose assistant turn ends in text the probe vocabulary lacks
        pytest.skip(f"{name}: {note}")
    token, token_id, inside = found
    assert inside, f"{name}: {token!r} outside the mask"
    try:
        masked = masked_ids(tokenizer)
    except Exception:  # a processor's template (content parts only): render transformers' mask the same way
        parts = [{"role": m["role"], "content": [{"type": "text", "text": m["content"]}]} for m in PROBE]
        masked = masked_ids(tokenizer, parts)
    else:
        assert stop_token_trained(tokenizer) in (True, None), name
    assert token_id in masked, name


def test_qwen3_training_template_is_clean() -> None:
    trl = pytest.importorskip("trl.chat_template_utils")
    template = trl.qwen3_training_chat_template
    tokenizer = chatml(template)
    config, generation = qwen3_config()
    report = check_special_tokens(config, tokenizer, generation)
    assert report.layout.assistant_mask_end_of_turn == (IM_END, 258, True)
    assert "TG214" not in report.codes()
    assert 258 in masked_ids(tokenizer)
    assert trl.is_chat_template_stop_token_trained(tokenizer)


# ---- a property over generated templates ---------------------------------------------------------------------

END_TOKENS = {"<|im_end|>": "chatml", "<end_of_turn>": "gemma", "<|eot_id|>": "llama3"}


@st.composite
def generation_templates(draw: st.DrawFn) -> tuple[str, str, str]:
    """A one-loop template: a header per turn, the assistant's content inside ``{% generation %}``, and the end of
    turn inside or outside the block, with whitespace before/after it and inside/outside the block, tags with or
    without whitespace control, the end of turn written literally or as ``eos_token``. Returns the template, the
    end-of-turn token and a label."""
    eot = draw(st.sampled_from(sorted(END_TOKENS)))
    literal = draw(st.booleans())
    eot_expr = f"'{eot}'" if literal else "eos_token"
    before = draw(st.sampled_from(["", "\\n", " ", "\\n\\n"]))  # between the content and the end of turn
    after = draw(st.sampled_from(["", "\\n"]))  # after the end of turn
    place = draw(st.sampled_from(["inside", "outside", "outside-after-whitespace", "with-trailing-whitespace"]))
    header_inside = draw(st.booleans())
    open_tag = draw(st.sampled_from(["{% generation %}", "{%- generation %}", "{% generation -%}"]))
    close_tag = draw(st.sampled_from(["{% endgeneration %}", "{%- endgeneration %}", "{% endgeneration -%}"]))
    header = "{{ '<|start|>' + m['role'] + '\\n' }}"
    content = "{{ m['content'] }}"
    if place == "inside":
        body = f"{content}{{{{ '{before}' }}}}{{{{ {eot_expr} }}}}"
        tail = f"{{{{ '{after}' }}}}"
    elif place == "with-trailing-whitespace":
        body = f"{content}{{{{ '{before}' }}}}{{{{ {eot_expr} }}}}{{{{ '{after}' }}}}"
        tail = ""
    elif place == "outside-after-whitespace":  # the whitespace inside the block, the end of turn after it
        body = f"{content}{{{{ '{before}' }}}}"
        tail = f"{{{{ {eot_expr} }}}}{{{{ '{after}' }}}}"
    else:
        body = content
        tail = f"{{{{ '{before}' }}}}{{{{ {eot_expr} }}}}{{{{ '{after}' }}}}"
    assistant = f"{header}{open_tag}{body}{close_tag}" if not header_inside else f"{open_tag}{header}{body}{close_tag}"
    template = (
        "{% for m in messages %}{% if m['role'] == 'assistant' %}"
        + assistant
        + tail
        + "{% else %}"
        + header
        + f"{{{{ m['content'] }}}}{{{{ {eot_expr} }}}}{{{{ '{after}' }}}}"
        + "{% endif %}{% endfor %}"
    )
    return template, eot, f"{place} before={before!r} after={after!r} literal={literal} header_inside={header_inside}"


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(drawn=generation_templates())
def test_verdict_equals_transformers_mask(drawn: tuple[str, str, str]) -> None:
    template, eot, label = drawn
    tokenizer = tiny_tokenizer(["<|start|>", *sorted(END_TOKENS)], eos=eot, template=template)
    eot_id = tokenizer.convert_tokens_to_ids(eot)
    config, generation = qwen3_config()
    config.eos_token_id = generation.eos_token_id = eot_id
    report = check_special_tokens(config, tokenizer, generation)
    found = report.layout.assistant_mask_end_of_turn
    assert found is not None and found[:2] == (eot, eot_id), (label, report.layout.notes)
    trained = eot_id in masked_ids(tokenizer)
    event(f"end of turn trained: {trained}")
    assert found[2] == trained, (label, template)
    assert ("TG214" in report.codes()) == (not trained), label
    trl_verdict = stop_token_trained(tokenizer)
    assert trl_verdict in (trained, None), (label, template)
    # the folder path reads the same field
    with tempfile.TemporaryDirectory() as folder:
        tokenizer.save_pretrained(folder)
        config.save_pretrained(folder)
        generation.save_pretrained(folder)
        assert read_folder(folder).layout.assistant_mask_end_of_turn == found, label


# ---- cost: no second render without the tag --------------------------------------------------------------------


def test_templates_without_the_tag_are_not_rendered_again(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Any] = []
    original = chat_template._render_tracked

    def counting(*args: Any) -> Any:
        calls.append(args)
        return original(*args)

    monkeypatch.setattr(chat_template, "_render_tracked", counting)
    plain = CASE_TEMPLATE.replace("{% generation %}", "").replace("{% endgeneration %}", "")
    assert chat_template.assistant_mask_end_of_turn(plain, {IM_END: 258}, {}) == (None, None)
    assert chat_template.assistant_mask_end_of_turn({"default": plain}, {IM_END: 258}, {}) == (None, None)
    assert calls == []
    assert chat_template.assistant_mask_end_of_turn(CASE_TEMPLATE, {IM_END: 258}, {}) == ((IM_END, 258, False), None)
    assert len(calls) == 1
    # a tracked render leaves no state behind: plain renders record nothing
    assert chat_template._TRACKING.get() is None
    assert "TOKENGUARD_ASSISTANT_REPLY" in chat_template._render(CASE_TEMPLATE, {})
    assert len(calls) == 1


def test_a_template_that_fails_to_render_leaves_a_note() -> None:
    broken = "{% generation %}{{ raise_exception('no probe') }}{% endgeneration %}"
    found, note = chat_template.assistant_mask_end_of_turn(broken, {IM_END: 258}, {})
    assert found is None and note is not None and "no probe" in note
    no_reply = "{% generation %}x{% endgeneration %}"
    assert chat_template.assistant_mask_end_of_turn(no_reply, {IM_END: 258}, {})[1] == (
        "assistant mask not checked: the assistant message is not rendered"
    )
