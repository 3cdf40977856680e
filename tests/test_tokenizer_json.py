"""The folder reader's scan of ``tokenizer.json`` (issue 13, speed): it never decodes the vocab, yet for any writer
(tokenizers' own id order, keys sorted or shuffled by Python's json, ASCII escapes or raw UTF-8, indented or
compact) it finds the same special-token ids and the same ``len(tokenizer)`` as transformers loading the folder.
Tokens are drawn from the characters that make scanning JSON without a parser hard: quotes, backslashes,
braces, colons, commas, digits, non-ASCII."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("transformers")
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_tokenguard.static import folder as folder_module
from pytest_tokenguard.static.folder import read_folder

#: the characters a vocab key can hold that matter to a byte scan (a quote or backslash is escaped in JSON)
_CHARS = '"\\{}:,[] 0123456789aéĠ€'
_TOKENS = st.text(alphabet=_CHARS, min_size=1, max_size=6)

WRITERS = ("tokenizers", "sorted-indented", "shuffled-ascii", "shuffled-compact-utf8")


def _rewrite(path: Path, writer: str, seed: int) -> None:
    """Re-save ``tokenizer.json`` the way another tool would; tokenizers' own file is kept for "tokenizers"."""
    if writer == "tokenizers":
        return
    data = json.loads(path.read_text(encoding="utf-8"))
    if writer == "sorted-indented":
        path.write_text(json.dumps(data, sort_keys=True, indent=2), encoding="utf-8")
        return
    items = list(data["model"]["vocab"].items())
    random.Random(seed).shuffle(items)
    data["model"]["vocab"] = dict(items)
    if writer == "shuffled-ascii":
        path.write_text(json.dumps(data), encoding="utf-8")
    else:
        path.write_text(json.dumps(data, ensure_ascii=False, separators=(",", ":")), encoding="utf-8")


def _save(folder: Path, vocab_tokens: list[str], eos_in_vocab: int | None, all_in_vocab: bool = False) -> Any:
    """A BPE tokenizer over ``vocab_tokens`` (ids 0..n-1, dense as tokenizers requires) with bos/pad added as
    special tokens after the vocab and eos either added too or (``eos_in_vocab``) a vocab token; with
    ``all_in_vocab`` bos, eos and pad are all vocab tokens, so the vocab's highest id decides ``len(tokenizer)``."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    vocab = {token: index for index, token in enumerate(vocab_tokens)}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    eos = vocab_tokens[eos_in_vocab] if eos_in_vocab is not None else "<|eos|>"
    bos, pad = (vocab_tokens[0], vocab_tokens[-1]) if all_in_vocab else ("<|bos|>", "<|pad|>")
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=bos, eos_token=eos, pad_token=pad)
    tokenizer.save_pretrained(folder)
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "vocab_size": len(tokenizer)}), encoding="utf-8")
    return tokenizer


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    tokens=st.lists(_TOKENS, min_size=2, max_size=60, unique=True),
    writer=st.sampled_from(WRITERS),
    eos_pick=st.none() | st.integers(0, 10_000),
    all_in_vocab=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_any_writer_reads_like_transformers(
    tmp_path_factory: pytest.TempPathFactory, tokens: list[str], writer: str, eos_pick: int | None, all_in_vocab: bool, seed: int
) -> None:
    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp("tok")
    eos_in_vocab = None if eos_pick is None and not all_in_vocab else (eos_pick or 0) % len(tokens)
    _save(folder, tokens, eos_in_vocab, all_in_vocab)
    _rewrite(folder / "tokenizer.json", writer, seed)
    loaded = AutoTokenizer.from_pretrained(folder)

    layout = read_folder(folder).layout
    assert layout.tokenizer == {"bos": loaded.bos_token_id, "eos": loaded.eos_token_id, "pad": loaded.pad_token_id}
    assert layout.tokenizer_length == len(loaded)


def _scan(path: Path) -> Any:
    """The reader's ``tokenizer.json`` view, and whether it took the fast scan (no full ``json.loads``)."""
    reader = folder_module._TokenizerJson(path)
    return reader, reader.vocab is None


@pytest.mark.parametrize("writer", WRITERS)
def test_every_writer_takes_the_scan_not_the_full_parse(tmp_path: Path, writer: str) -> None:
    # the speed goal (benchmarks/static_checks.py) depends on never json.loads-ing the vocab, whatever the writer
    tokens = [f"t{index}" for index in range(300)] + ['a"b', "c\\", "{x}", "é:1,"]
    _save(tmp_path, tokens, eos_in_vocab=3)
    _rewrite(tmp_path / "tokenizer.json", writer, seed=7)
    reader, scanned = _scan(tmp_path / "tokenizer.json")
    assert scanned
    assert reader.highest == len(tokens) - 1  # the vocab only: added specials are read from "added_tokens"
    assert reader.lookup("t3") == 3
    assert reader.lookup('a"b') == 300
    assert reader.lookup("é:1,") == 303


def test_a_vocab_with_gaps_in_id_order_keeps_its_last_id(tmp_path: Path) -> None:
    # tokenizers keeps the ids a file gives: a vocab with a hole has its highest id last, not at n - 1
    _save(tmp_path, [f"t{index}" for index in range(50)], eos_in_vocab=None)
    path = tmp_path / "tokenizer.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    data["model"]["vocab"]["t49"] = 60
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    reader, scanned = _scan(path)
    assert scanned
    assert reader.highest == 60  # not 49 (n - 1): a writer that keeps id order keeps the hole


@pytest.mark.parametrize("writer", WRITERS)
def test_an_empty_vocab_reads_like_transformers(tmp_path: Path, writer: str) -> None:
    # a user found the sorted writer's empty vocab read up to a later object's brace: 11 tokens instead of 3
    from tokenizers import Tokenizer, models
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(vocab={}, merges=[]))
    backend.enable_padding(length=8)  # a later {"Fixed": 8} object whose brace follows a digit
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    tokenizer.save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "vocab_size": 10}), encoding="utf-8")
    _rewrite(tmp_path / "tokenizer.json", writer, seed=3)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    layout = read_folder(tmp_path).layout
    assert layout.tokenizer_length == len(loaded) == 3
    assert layout.tokenizer == {"bos": loaded.bos_token_id, "eos": loaded.eos_token_id, "pad": loaded.pad_token_id}
