"""SentencePiece-only folders (issue 13, case sentencepiece-only): the folder check reads the special-token ids from
``tokenizer.model`` and agrees with the object API on the loaded tokenizer."""

from __future__ import annotations

import builtins
from pathlib import Path
from typing import Any

import pytest

from pytest_tokenguard.static.checks import check_layout
from pytest_tokenguard.static.folder import FolderError, read_folder
from tests.test_cli import run_cli

CASE = Path(__file__).parent / "data" / "cases" / "sentencepiece-only" / "sp-real"


def _codes(report: Any) -> set[tuple[str, str, str]]:
    return {(f.code, f.field, f.severity) for f in report.findings}


def test_folder_reads_the_ids_from_the_sentencepiece_model(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("sentencepiece", reason="the folder check reads tokenizer.model with sentencepiece")
    folder = read_folder(CASE)
    layout = folder.layout
    assert layout.tokenizer == {"bos": 1, "eos": 2, "pad": 0}
    assert layout.tokenizer_length == 60
    assert str(CASE / "tokenizer.model") in folder.files
    assert _codes(check_layout(layout)) == {("TG201", "pad", "error"), ("TG203", "pad", "error")}
    run = run_cli(capsys, "check", CASE)
    assert run.rc == 1
    assert "TG201 error: model config pad None vs tokenizer pad 0 '<unk>': Trainer.train() rewrites the model config to 0" in (
        run.out.splitlines()
    )


def test_object_api_agrees() -> None:
    pytest.importorskip("sentencepiece", reason="transformers loads tokenizer.model with sentencepiece")
    pytest.importorskip("google.protobuf", reason="transformers converts tokenizer.model with protobuf")
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    from pytest_tokenguard.static.api import check_special_tokens

    tokenizer = AutoTokenizer.from_pretrained(CASE)
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id, len(tokenizer)) == (1, 2, 0, 60)
    objects = check_special_tokens(AutoConfig.from_pretrained(CASE), tokenizer, GenerationConfig.from_pretrained(CASE))
    assert _codes(objects) == _codes(check_layout(read_folder(CASE).layout))


def test_without_sentencepiece_a_note_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_sentencepiece(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "sentencepiece":
            raise ImportError("No module named 'sentencepiece'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_sentencepiece)
    layout = read_folder(CASE).layout
    assert layout.tokenizer == {"bos": None, "eos": None, "pad": None}
    assert f"{CASE / 'tokenizer.model'}: not read (install sentencepiece): special-token ids from tokenizer_config.json only" in (
        layout.notes
    )


def test_a_corrupt_sentencepiece_model_names_the_file(tmp_path: Path) -> None:
    pytest.importorskip("sentencepiece", reason="the folder check reads tokenizer.model with sentencepiece")
    for name in ("config.json", "generation_config.json", "tokenizer_config.json"):
        (tmp_path / name).write_bytes((CASE / name).read_bytes())
    (tmp_path / "tokenizer.model").write_bytes(b"not a sentencepiece model")
    with pytest.raises(FolderError, match=r"tokenizer\.model: not a SentencePiece model"):
        read_folder(tmp_path)
