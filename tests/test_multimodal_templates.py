"""Chat templates that take message content as a list of parts (multimodal processors: Idefics3, LLaVA,
Qwen2-VL, Gemma-3; issue 13): the end of turn is found, so TG208 ("generation never stops") runs for them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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


#: ends assistant turns with <|endoftext|> instead: which of two templates was read shows in the end of turn
ENDOFTEXT_PARTS = (
    "{% for m in messages %}{{ m['role'] }}: {% for c in m['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}"
    "{% endif %}{% endfor %}<|endoftext|>\n{% endfor %}"
)


def _processor_folder(tmp_path: Path, files: dict[str, str]) -> tuple[Any, Path]:
    """A Qwen2.5 model and a Qwen2-Audio processor (a real ProcessorMixin that builds without PIL or torchvision,
    which LLaVA's and Idefics3's image processors need here) saved with save_pretrained; then its templates are put
    where ``files`` says (``processor_config.json`` key, ``chat_template.json``, ``chat_template.jinja``), as
    older or hand-made processor repos have them. The tokenizer has no template of its own."""
    from transformers import Qwen2AudioProcessor, WhisperFeatureExtractor

    model, tokenizer = zoo.build("qwen2.5-0.5b-instruct")
    tokenizer.chat_template = None
    model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids("<|endoftext|>")  # <|im_end|> stops nothing
    processor = Qwen2AudioProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=8), tokenizer=tokenizer)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    for written in ("chat_template.jinja", "chat_template.json"):  # Qwen2-Audio's default template (4.x: .json)
        (tmp_path / written).unlink(missing_ok=True)  # the case decides where one goes
    config_path = tmp_path / "processor_config.json"
    config = json.loads(config_path.read_text())
    assert "chat_template" not in config and "chat_template" not in json.loads((tmp_path / "tokenizer_config.json").read_text())
    if "processor_config.json" in files:
        config["chat_template"] = files["processor_config.json"]
        config_path.write_text(json.dumps(config))
    if "chat_template.json" in files:
        (tmp_path / "chat_template.json").write_text(json.dumps({"chat_template": files["chat_template.json"]}))
    if "chat_template.jinja" in files:
        (tmp_path / "chat_template.jinja").write_text(files["chat_template.jinja"])
    return model, tmp_path


IM_END = ("<|im_end|>", 151645)
ENDOFTEXT = ("<|endoftext|>", 151643)


def _transformers_major() -> int:
    from pytest_tokenguard import versions

    installed = versions.installed_text("transformers")
    return versions.parse(installed).major if installed else 0


@pytest.mark.skipif(
    _transformers_major() < 5,
    reason="processors keep their template in processor_config.json / chat_template.jinja from transformers 5 (the "
    "folder reader follows that order); 4.x processors save and read chat_template.json only",
)
@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"processor_config.json": CHATML_PARTS}, IM_END),
        ({"processor_config.json": CHATML_PARTS, "chat_template.jinja": ENDOFTEXT_PARTS}, IM_END),
        ({"processor_config.json": CHATML_PARTS, "chat_template.json": ENDOFTEXT_PARTS}, IM_END),
        ({"chat_template.json": CHATML_PARTS, "chat_template.jinja": ENDOFTEXT_PARTS}, IM_END),
        ({"chat_template.jinja": ENDOFTEXT_PARTS}, ENDOFTEXT),
    ],
    ids=["processor-config-only", "over-jinja", "over-chat-template-json", "legacy-json-over-jinja", "jinja-only"],
)
def test_processor_level_templates_are_read_as_transformers_reads_them(
    files: dict[str, str], expected: tuple[str, int], tmp_path: Path
) -> None:
    from transformers import AutoProcessor

    model, folder = _processor_folder(tmp_path, files)
    loaded = AutoProcessor.from_pretrained(folder)  # the differential: ProcessorMixin.get_processor_dict's choice
    assert loaded.chat_template == (CHATML_PARTS if expected == IM_END else ENDOFTEXT_PARTS)
    objects = check_special_tokens(model, loaded)
    report = check_layout(read_folder(folder).layout)
    assert report.layout.end_of_turn == objects.layout.end_of_turn == expected
    assert sorted(f.message for f in report.findings) == sorted(f.message for f in objects.findings)
    tg208 = [f.severity for f in report.findings if f.code == "TG208"]
    assert tg208 == (["error"] if expected == IM_END else [])  # generation stops on <|endoftext|> only
    if "processor_config.json" in files:
        assert str(folder / "processor_config.json") in read_folder(folder).files
