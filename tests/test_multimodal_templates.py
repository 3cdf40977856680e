"""Chat templates that take message content as a list of parts (multimodal processors: Idefics3, LLaVA,
Qwen2-VL, Gemma-3; issue 13): the end of turn is found, so TG208 ("generation never stops") runs for them."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("transformers")

from pytest_tokenguard.static.api import check_special_tokens
from pytest_tokenguard.static.chat_template import end_of_turn
from pytest_tokenguard.static.checks import check_layout
from pytest_tokenguard.static.folder import read_folder
from pytest_tokenguard.suite import zoo

#: Idefics3's template shape: it indexes message['content'][0]['type'], so string content fails to render
IDEFICS3 = (
    "<|begin_of_text|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{ line['text'] }}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
)
#: a ChatML template that renders only text parts (Qwen2-VL style): string content renders nothing of the reply
CHATML_PARTS = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% for c in m['content'] %}{% if c['type'] == 'text' %}"
    "{{ c['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endfor %}"
)


def test_a_parts_only_template_has_an_end_of_turn() -> None:
    assert end_of_turn(IDEFICS3, {"<end_of_utterance>": 49279, "<|begin_of_text|>": 0}, {}) == (
        ("<end_of_utterance>", 49279),
        None,
    )


#: the same, refusing string content outright (as some processors' templates do)
STRICT_PARTS = (
    "{% for m in messages %}{% if m['content'] is string %}{{ raise_exception('content must be a list of parts') }}"
    "{% endif %}{% endfor %}" + CHATML_PARTS
)


@pytest.mark.parametrize("template", [CHATML_PARTS, STRICT_PARTS], ids=["renders-nothing", "raises"])
def test_tg208_runs_for_a_processor_style_template(template: str, tmp_path: Path) -> None:
    model, tokenizer = zoo.build("qwen2.5-0.5b-instruct")
    tokenizer.chat_template = template
    model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids("<|endoftext|>")  # <|im_end|> stops nothing
    report = check_special_tokens(model, tokenizer)
    assert report.layout.end_of_turn == ("<|im_end|>", tokenizer.convert_tokens_to_ids("<|im_end|>"))
    assert ("TG208", "error") in {(f.code, f.severity) for f in report.findings}
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    folder = check_layout(read_folder(tmp_path).layout)
    assert sorted(f.message for f in folder.findings) == sorted(f.message for f in report.findings)
