"""SentencePiece-only folders (issue 13, case sentencepiece-only): the folder check reads the special-token ids from
``tokenizer.model`` and agrees with the object API on the loaded tokenizer."""

from __future__ import annotations

import builtins
import io
import json
from dataclasses import dataclass
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


# -- siblings built here: other families' SentencePiece-only folders -----------------------------------------------

#: Gemma's chat template (string content), as its tokenizer_config.json ships it
GEMMA_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<start_of_turn>"
    "{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n{{ message['content'] | trim }}"
    "<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


@dataclass(frozen=True)
class Family:
    """A family's SentencePiece-only layout: the trainer's special pieces and ids, ``tokenizer_config.json``,
    ``config.json`` / ``generation_config.json`` ids, and what the loaded tokenizer must say."""

    tokenizer_class: str
    pieces: dict[str, Any]
    user_defined: list[str]
    tokenizer_config: dict[str, Any]
    config: dict[str, Any]
    generation: dict[str, Any]
    #: (bos, eos, pad) ids of the loaded tokenizer, and the ids ``tokenizer("the fox")`` starts with
    ids: tuple[int | None, int | None, int | None]
    end_of_turn: list[Any] | None
    codes: set[tuple[str, str, str]]


VOCAB = 120
FAMILIES = {
    # Gemma: <pad>=0 <eos>=1 <bos>=2 <unk>=3 <mask>=4, turn markers as user-defined pieces; a chat template that
    # writes bos while the tokenizer adds it too (TG301), and the tokenizer eos is not the end of turn (TG212)
    "gemma": Family(
        tokenizer_class="GemmaTokenizer",
        pieces={"pad_id": 0, "eos_id": 1, "bos_id": 2, "unk_id": 3, "pad_piece": "<pad>", "eos_piece": "<eos>"}
        | {"bos_piece": "<bos>", "unk_piece": "<unk>"},
        user_defined=["<mask>", "<start_of_turn>", "<end_of_turn>"],
        tokenizer_config={
            "bos_token": "<bos>",
            "eos_token": "<eos>",
            "pad_token": "<pad>",
            "unk_token": "<unk>",
            "mask_token": "<mask>",
            "add_bos_token": True,
            "add_eos_token": False,
            "chat_template": GEMMA_TEMPLATE,
        },
        config={"architectures": ["GemmaForCausalLM"], "model_type": "gemma", "bos_token_id": 2, "eos_token_id": 1}
        | {"pad_token_id": 0},
        generation={"bos_token_id": 2, "eos_token_id": [1, 6], "pad_token_id": 0},
        ids=(2, 1, 0),
        end_of_turn=["<end_of_turn>", 6],
        codes={("TG212", "eos", "warning"), ("TG301", "bos", "error")},
    ),
    # Llama 2: <unk>=0 <s>=1 </s>=2, no pad anywhere (TG207)
    "llama-2": Family(
        tokenizer_class="LlamaTokenizer",
        pieces={"unk_id": 0, "bos_id": 1, "eos_id": 2, "pad_id": -1, "unk_piece": "<unk>", "bos_piece": "<s>"}
        | {"eos_piece": "</s>"},
        user_defined=[],
        tokenizer_config={
            "bos_token": "<s>",
            "eos_token": "</s>",
            "pad_token": None,
            "unk_token": "<unk>",
            "add_bos_token": True,
            "add_eos_token": False,
            "legacy": False,
        },
        config={"architectures": ["LlamaForCausalLM"], "model_type": "llama", "bos_token_id": 1, "eos_token_id": 2}
        | {"pad_token_id": None},
        generation={"bos_token_id": 1, "eos_token_id": 2},
        ids=(1, 2, None),
        end_of_turn=None,
        codes={("TG207", "pad", "warning")},
    ),
}

CORPUS = "the quick brown fox jumps over a lazy dog while tiny models learn their special tokens".split()


def sentencepiece_folder(path: Path, family: Family, **config: Any) -> Path:
    """A SentencePiece-only folder of ``family``: ``tokenizer.model`` trained here (BPE, 120 pieces) on a tiny
    in-memory corpus, ``tokenizer_config.json`` with ``added_tokens_decoder`` for the special pieces, no
    ``tokenizer.json``; ``config`` overrides ``config.json`` values."""
    spm = pytest.importorskip("sentencepiece", reason="the sibling's tokenizer.model is trained with sentencepiece")
    model = io.BytesIO()
    sentences = [" ".join(CORPUS[i:] + CORPUS[:i]) for i in range(len(CORPUS))] * 4
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=model,
        vocab_size=VOCAB,
        model_type="bpe",
        user_defined_symbols=family.user_defined,
        minloglevel=2,
        **family.pieces,
    )
    path.mkdir()
    (path / "tokenizer.model").write_bytes(model.getvalue())
    processor = spm.SentencePieceProcessor(model_proto=model.getvalue())
    decoder = {
        str(index): {"content": processor.IdToPiece(index), "normalized": False, "special": True}
        for index in range(processor.GetPieceSize())
        if processor.IsControl(index) or processor.IsUnknown(index) or processor.IdToPiece(index) in family.user_defined
    }
    tokenizer_config = {"tokenizer_class": family.tokenizer_class, "added_tokens_decoder": decoder, **family.tokenizer_config}
    (path / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    (path / "config.json").write_text(json.dumps({**family.config, "vocab_size": VOCAB, **config}))
    (path / "generation_config.json").write_text(json.dumps(family.generation))
    return path


def object_findings(path: Path, family: Family) -> tuple[Any, list[dict[str, Any]]]:
    """The family's tokenizer class (transformers converts tokenizer.model) and ``check_special_tokens`` on the
    loaded config, tokenizer and generation config."""
    pytest.importorskip("google.protobuf", reason="transformers converts tokenizer.model with protobuf")
    import transformers

    from pytest_tokenguard.static.api import check_special_tokens

    tokenizer = getattr(transformers, family.tokenizer_class).from_pretrained(path)
    config = transformers.AutoConfig.from_pretrained(path)
    report = check_special_tokens(config, tokenizer, transformers.GenerationConfig.from_pretrained(path))
    findings: list[dict[str, Any]] = report.to_dict()["findings"]
    return tokenizer, findings


def folder_findings(capsys: pytest.CaptureFixture[str], path: Path) -> tuple[int, dict[str, Any]]:
    run = run_cli(capsys, "check", path, "--format", "json")
    assert run.err == ""
    data = run.json()
    assert data["findings"] == check_layout(read_folder(path).layout).to_dict()["findings"]
    return run.rc, data


@pytest.mark.parametrize("name", FAMILIES)
def test_sibling_folder_agrees_with_the_object_api(tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str) -> None:
    family = FAMILIES[name]
    path = sentencepiece_folder(tmp_path / name, family)
    assert not (path / "tokenizer.json").exists()
    tokenizer, expected = object_findings(path, family)
    assert type(tokenizer).__name__ == family.tokenizer_class
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id, len(tokenizer)) == (*family.ids, VOCAB)
    assert tokenizer("the fox").input_ids[0] == family.ids[0]  # add_bos_token

    rc, data = folder_findings(capsys, path)
    assert data["findings"] == expected
    assert {(f["code"], f["field"], f["severity"]) for f in expected} == family.codes
    bos, eos, pad = family.ids
    assert data["layout"]["tokenizer"] == {"bos": bos, "eos": eos, "pad": pad}
    assert (data["layout"]["tokenizer_length"], data["layout"]["end_of_turn"]) == (VOCAB, family.end_of_turn)
    assert str(path / "tokenizer.model") in data["files"]
    assert rc == (1 if any(f["severity"] == "error" for f in expected) else 0)


@pytest.mark.parametrize("name", FAMILIES)
def test_sibling_with_a_pad_id_the_tokenizer_does_not_define(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    family = FAMILIES[name]
    path = sentencepiece_folder(tmp_path / name, family, pad_token_id=VOCAB)  # one past the last piece
    _, expected = object_findings(path, family)
    rc, data = folder_findings(capsys, path)
    assert data["findings"] == expected
    pad = {f["code"]: f for f in expected if f["field"] == "pad"}
    assert pad["TG204"]["message"] == f"model config pad {VOCAB}: >= the {VOCAB} embedding rows"
    assert pad["TG204"]["severity"] == "error" and rc == 1
    if family.ids[2] is None:  # Llama 2: the tokenizer defines no pad at all
        assert pad["TG201"]["severity"] == "warning"
        assert pad["TG201"]["values"] == {"model": VOCAB, "tokenizer": None}
    else:
        assert pad["TG201"]["severity"] == "error"
        assert pad["TG201"]["message"].startswith(f"model config pad {VOCAB} vs tokenizer pad 0 '<pad>': ")


@pytest.mark.parametrize("name", FAMILIES)
def test_sibling_with_a_pad_id_on_a_plain_piece(tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str) -> None:
    family = FAMILIES[name]
    path = sentencepiece_folder(tmp_path / name, family, pad_token_id=7)  # a word piece, not a special token
    _, expected = object_findings(path, family)
    assert "TG201" in {f["code"] for f in expected}
    assert folder_findings(capsys, path)[1]["findings"] == expected
