"""TG211: the saved tokenizer of a decoder-only chat model pads on the right (issue 13, case
right-padding-inference), folder and object paths alike."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("transformers")
from transformers import AutoConfig, AutoTokenizer, GenerationConfig

from pytest_tokenguard.guard import calls
from pytest_tokenguard.static.api import check_special_tokens
from pytest_tokenguard.static.checks import check_layout
from pytest_tokenguard.static.folder import read_folder
from pytest_tokenguard.static.layout import TokenLayout
from pytest_tokenguard.static.objects import layout_from_objects
from pytest_tokenguard.suite import zoo
from tests.test_cli import run_cli

CASE = Path(__file__).parent / "data" / "cases" / "right-padding-inference" / "ckpt"
TG211 = "TG211 warning: the tokenizer pads on the right: batched generate() continues the shorter prompts from pad tokens"


def _with_padding(folder: Path, side: str | None, into: Path) -> Path:
    shutil.copytree(folder, into)
    path = into / "tokenizer_config.json"
    config = json.loads(path.read_text())
    config.pop("padding_side", None)
    if side is not None:
        config["padding_side"] = side
    path.write_text(json.dumps(config))
    return into


def test_case_warns_and_fails_under_strict(capsys: pytest.CaptureFixture[str]) -> None:
    run = run_cli(capsys, "check", CASE)
    assert run.rc == 0, run.out
    assert TG211 in run.out.splitlines()
    assert run_cli(capsys, "check", "--strict", CASE).rc == 1


def test_case_object_api_agrees_with_the_folder() -> None:
    tokenizer = AutoTokenizer.from_pretrained(CASE)
    config, generation = AutoConfig.from_pretrained(CASE), GenerationConfig.from_pretrained(CASE)
    assert tokenizer.padding_side == "right"  # what transformers loads from the folder
    objects = check_special_tokens(config, tokenizer, generation)
    folder = check_layout(read_folder(CASE).layout)
    assert "TG211" in objects.codes()
    assert objects.codes() == folder.codes()


@pytest.mark.parametrize("side, expected", [("right", True), ("left", False), (None, False)])
def test_saved_padding_side(tmp_path: Path, side: str | None, expected: bool, capsys: pytest.CaptureFixture[str]) -> None:
    """Left, or not saved at all (the tokenizer class decides; nothing is claimed), is clean."""
    folder = _with_padding(CASE, side, tmp_path / "ckpt")
    run = run_cli(capsys, "check", folder)
    assert (TG211 in run.out.splitlines()) is expected


@pytest.mark.parametrize("family", ["qwen3-0.6b", "gemma-2-2b-it"])
def test_sibling_chat_families_saved_with_right_padding(family: str, tmp_path: Path) -> None:
    model, tokenizer = zoo.build(family)
    tokenizer.padding_side = "right"
    model.config.save_pretrained(tmp_path)
    model.generation_config.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    folder = check_layout(read_folder(tmp_path).layout)
    assert "TG211" in folder.codes()
    assert "TG211" in check_special_tokens(model, tokenizer).codes()
    tokenizer.padding_side = "left"
    assert "TG211" not in check_special_tokens(model, tokenizer).codes()


def test_not_for_encoder_decoders_or_models_without_a_chat_template() -> None:
    chat = {"model": {"bos": 1, "eos": 2, "pad": 0}, "tokenizer": {"bos": 1, "eos": 2, "pad": 0}}
    base = TokenLayout(**chat, padding_side="right", end_of_turn=("</s>", 2))  # type: ignore[arg-type]
    assert "TG211" in check_layout(base).codes()
    seq2seq = TokenLayout(**chat, padding_side="right", end_of_turn=("</s>", 2), encoder_decoder=True)  # type: ignore[arg-type]
    assert "TG211" not in check_layout(seq2seq).codes()
    plain = TokenLayout(**chat, padding_side="right")  # type: ignore[arg-type]
    assert "TG211" not in check_layout(plain).codes()


def test_not_reported_at_trainer_train_by_the_call_checks() -> None:
    """Training pads on the right on purpose: --tokenguard-calls leaves TG211 out at Trainer.train()."""
    model, tokenizer = zoo.build("qwen3-0.6b")
    tokenizer.padding_side = "right"
    recorded: list[str] = []

    class Recorder:
        def add(self, code: str, *args: Any, **kwargs: Any) -> None:
            recorded.append(code)

    options = calls.Options(calls=True, strict=True)
    calls._record_static(Recorder(), options, layout_from_objects(model, tokenizer), "Trainer.train()")
    assert "TG211" not in recorded
    calls._record_static(Recorder(), options, layout_from_objects(model, tokenizer), "generate()")
    assert "TG211" in recorded
