"""Read a :class:`TokenLayout` from a checkpoint folder: JSON files only, and safetensors headers for the
embedding rows (``weights.py``).

No torch, no transformers, no pickle, no network, no Python from the folder (the chat template is
rendered in jinja2's sandbox, as transformers does). Every problem with the input is a
:class:`FolderError` naming the file.

``tokenizer.json`` can be tens of MB; decoding it whole costs more than loading the tokenizer's
few fields we need. Files written by ``tokenizers`` list the model vocab in id order, so the
highest id is the last vocab entry, and special strings can be looked up as keys. Anything that
does not look like that layout falls back to a full ``json.loads``.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_tokenguard.static.chat_template import assistant_mask_end_of_turn, end_of_turn, starts_with_token
from pytest_tokenguard.static.layout import FIELDS, NAMED_SPECIALS, TokenLayout, id_list, is_id

MiB = 1024 * 1024
#: largest file read, per name (anything else is small JSON)
SIZE_LIMITS = {"tokenizer.json": 512 * MiB}
DEFAULT_LIMIT = 16 * MiB


class FolderError(Exception):
    """Unreadable or invalid input; the message names the file and the problem."""


@dataclass
class _Tokenizer:
    ids: dict[str, Any]
    strings: dict[str, int]  # token string -> id (added tokens and named specials)
    length: int | None
    template: Any
    variables: dict[str, str | None]
    files: list[str] = field(default_factory=list)
    backend: _TokenizerJson | None = None
    #: token strings the tokenizer adds before / after every encoded text (None: unknown)
    edges: tuple[list[str], list[str]] | None = None
    #: ``padding_side`` saved in tokenizer_config.json (None: not saved; the tokenizer class's default decides)
    padding_side: str | None = None
    #: ids of added tokens flagged ``"special": true`` (tokenizer.json ``added_tokens``, ``added_tokens_decoder``)
    special_ids: frozenset[int] = frozenset()
    #: what the report should say about how the tokenizer was read
    notes: list[str] = field(default_factory=list)
    #: id -> piece of a SentencePiece-only folder's ``tokenizer.model`` (None for tokenizer.json folders)
    pieces_by_id: dict[int, str] | None = None

    def token_for_id(self, token_id: int) -> str | None:
        """The plain vocab string of ``token_id`` (display only, as the object API names ids)."""
        if self.backend is not None:
            return self.backend.token_for_id(token_id)
        return self.pieces_by_id.get(token_id) if self.pieces_by_id else None


def _read_bytes(path: Path) -> bytes:
    limit = SIZE_LIMITS.get(path.name, DEFAULT_LIMIT)
    try:
        info = path.stat()
        # a FIFO would block open() forever and a device (/dev/zero) never ends: regular files only
        if not stat.S_ISREG(info.st_mode):
            kind = "a folder" if stat.S_ISDIR(info.st_mode) else "a FIFO, device or socket"
            raise FolderError(f"{path}: not a regular file ({kind})")
        size = info.st_size
        if size > limit:
            raise FolderError(f"{path}: {size / MiB:.1f} MiB is larger than the {limit // MiB} MiB limit for this file")
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise FolderError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if len(data) > limit:
        raise FolderError(f"{path}: larger than the {limit // MiB} MiB limit for this file")
    return data


def _read_text(path: Path) -> str:
    data = _read_bytes(path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FolderError(f"{path}: not UTF-8 text (byte {exc.start})") from None


def _parse(path: Path, text: str) -> dict[str, Any]:
    if not text.strip():
        raise FolderError(f"{path}: empty file, expected a JSON object")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        # an interrupted download or copy ends early, and "Expecting ',' delimiter" alone does not say so
        ends_early = " (the file ends early: truncated?)" if exc.pos >= len(text.rstrip()) else ""
        raise FolderError(f"{path}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}{ends_early}") from None
    except RecursionError:
        raise FolderError(f"{path}: JSON nested too deeply") from None
    except ValueError as exc:  # not a JSONDecodeError: e.g. an int of more than 4300 digits
        raise FolderError(f"{path}: invalid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise FolderError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def read_json(path: Path) -> dict[str, Any]:
    return _parse(path, _read_text(path))


def _optional(folder: Path, name: str) -> dict[str, Any] | None:
    path = folder / name
    if not os.path.lexists(path):
        return None
    return read_json(path)


def _token_text(value: Any, path: Path, key: str) -> str | None:
    """A special token as saved: a string, ``{"content": ...}`` (AddedToken), or null."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("content"), str):
        return str(value["content"])
    raise FolderError(f'{path}: {key} must be a string, an object with "content", or null; got {value!r}')


def _add_string(strings: dict[str, int], by_id: dict[int, str], text: Any, token_id: Any, path: Path) -> None:
    if not isinstance(text, str) or not is_id(token_id) or token_id < 0:
        raise FolderError(f"{path}: an added token needs a string content and an int id >= 0, got {text!r} / {token_id!r}")
    if by_id.get(token_id, text) != text:
        raise FolderError(f"{path}: added tokens {by_id[token_id]!r} and {text!r} both have id {token_id}")
    if strings.get(text, token_id) != token_id:
        raise FolderError(f"{path}: added token {text!r} has two ids, {strings[text]} and {token_id}")
    strings[text] = token_id
    by_id[token_id] = text


_KEY_VALUE = re.compile(rb"\s*:\s*([\[{])")
_LAST_ID = re.compile(rb":\s*(\d+)\s*$")
#: after the vocab's closing brace: the next key of "model", or the end of "model" and then the next top-level key
#: or the end of the file. Inside a token string a quote is escaped and the file cannot end, so no token matches.
_AFTER_VOCAB = re.compile(rb'\}\s*(?:,\s*"[A-Za-z_]+"\s*:|\}\s*(?:,\s*"[A-Za-z_]+"\s*:|\}\s*\Z))')


def _vocab_end(data: bytes, start: int) -> int:
    """Offset of the ``}`` that closes the vocab object opened at ``start`` (its last value is an id), or -1.
    Only braces are tried (bytes.find), so tokens spelled with braces cost a failed match each."""
    brace = data.find(b"}", start)
    while brace >= 0:
        if _AFTER_VOCAB.match(data, brace):
            before = brace - 1
            while before > start and data[before] in b" \t\r\n":
                before -= 1
            if 0x30 <= data[before] <= 0x39:  # the last id's digit, not a brace inside a token
                return brace
        brace = data.find(b"}", brace + 1)
    return -1


def _key(data: bytes, name: bytes, opener: bytes, start: int = 0, end: int | None = None) -> int:
    """Offset of the ``opener`` that starts the value of key ``name`` (an object/array), or -1.

    Only a quoted string followed by ``:`` is a key, and a key inside the vocab maps to an int,
    so requiring ``{``/``[`` after it skips tokens that happen to be spelled like our keys.
    """
    needle = b'"' + name + b'"'
    stop = len(data) if end is None else end
    position = data.find(needle, start, stop)
    while position >= 0:
        match = _KEY_VALUE.match(data, position + len(needle))
        if match and match.group(1) == opener:
            return match.start(1)
        position = data.find(needle, position + 1, stop)
    return -1


_ID_AT = re.compile(rb'"\s*:\s*(\d+)\s*[,}]')


def _in_id_order(data: bytes, start: int, end: int, last: int, probes: int = 32) -> bool:
    """Whether the vocab ``data[start:end]`` lists its ids in increasing order from 0 to ``last``, judged from the
    first entry and the entries after ``probes`` evenly spaced offsets (a sorted or shuffled vocab fails this at
    the first or second probe; tokenizers writes ids in order)."""
    first = _ID_AT.search(data, start, end)
    if first is None or first.group(1) != b"0":
        return False
    previous = 0
    for index in range(1, probes + 1):
        found = _ID_AT.search(data, start + (end - start) * index // (probes + 1), end)
        if found is None:
            return False
        value = int(found.group(1))
        if value < previous or value > last:
            return False
        previous = value
    return True


def _count_keys(data: bytes, start: int, end: int) -> int:
    """Keys of the JSON object ``data[start:end]`` whose values are numbers (a vocab: ``"token": id``), counted
    without decoding: each key has two unescaped quotes. A quote inside a token follows an odd run of backslashes
    (``\\"``); an even run is a token ending in a backslash. UTF-8 never hides these two bytes."""
    quotes = data.count(b'"', start, end) - data.count(b'\\"', start, end)
    run_end = data.find(b'\\\\"', start, end)  # runs of two or more backslashes before a quote: rare
    while run_end >= 0:
        quote = run_end + 2
        run = quote
        while run > start and data[run - 1] == 0x5C:
            run -= 1
        quotes += (quote - run) % 2 == 0  # an even run escapes itself, not the quote: counted above by mistake
        run_end = data.find(b'\\\\"', quote + 1, end)
    return quotes // 2


class _TokenizerJson:
    """``tokenizer.json``: added tokens, highest id, and string -> id lookups in the vocab."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data = _read_bytes(path)
        self.added: list[Any] | None = None
        self.vocab_span: tuple[int, int] | None = None
        self.vocab: dict[str, int] | None = None
        self.highest: int | None = None
        self.model_at = len(self.data)
        if not self._fast_scan():
            self._full_parse()

    def _fast_scan(self) -> bool:
        """Read the added tokens and the vocab's span and size without decoding the vocab (a BPE vocab object of
        ``"token": id``, whatever the key order of the writer)."""
        data = self.data
        added_at = _key(data, b"added_tokens", b"[")
        model_at = _key(data, b"model", b"{", start=max(added_at, 0))  # vocab keys map to ids: never matched
        if added_at < 0 or model_at < 0 or not data.rstrip().endswith(b"}"):
            return False
        vocab_at = _key(data, b"vocab", b"{", start=model_at)
        if vocab_at < 0 or data[vocab_at + 1 : vocab_at + 64].lstrip().startswith(b"}"):
            return False  # no vocab object, or an empty one: the full parse is cheap and exact
        vocab_end = _vocab_end(data, vocab_at)
        if vocab_end < 0:
            return False
        # BPE only (merges after the vocab as tokenizers writes them, or before it, keys sorted); other models and
        # broken files take the full parse, which names what is wrong (the vocab's bytes are never decoded here)
        if _key(data, b"merges", b"[", start=vocab_end) < 0 and _key(data, b"merges", b"[", start=model_at, end=vocab_at) < 0:
            return False
        try:
            text = data[added_at:model_at].decode("utf-8")
            added, _ = json.JSONDecoder().raw_decode(text)
        except (UnicodeDecodeError, ValueError, RecursionError):  # the full parse names the problem
            return False
        if not isinstance(added, list):
            return False
        last = _LAST_ID.search(data, max(vocab_at + 1, vocab_end - 4096), vocab_end)
        self.added = added
        self.vocab_span = (vocab_at, vocab_end + 1)
        self.model_at = model_at
        if last is not None and _in_id_order(data, vocab_at, vocab_end, int(last.group(1))):
            self.highest = int(last.group(1))  # tokenizers' own writer: counting 150k keys would cost ~10 ms
        else:  # another writer sorted or shuffled the keys: ids are dense (0..n-1), so n - 1 is the highest
            self.highest = _count_keys(data, vocab_at, vocab_end) - 1
        return True

    def _full_parse(self) -> None:
        try:
            text = self.data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FolderError(f"{self.path}: not UTF-8 text (byte {exc.start})") from None
        data = _parse(self.path, text)
        added = data.get("added_tokens", [])
        if not isinstance(added, list):
            raise FolderError(f"{self.path}: added_tokens must be a list")
        self.added = added
        model = data.get("model")
        vocab = model.get("vocab") if isinstance(model, dict) else None
        if isinstance(vocab, dict):
            if not all(is_id(v) for v in vocab.values()):
                raise FolderError(f"{self.path}: model.vocab ids must be ints")
            self.vocab = vocab
            self.highest = max(vocab.values(), default=-1)
        elif isinstance(vocab, list):  # Unigram: [[piece, score], ...], id = position
            if not all(isinstance(entry, list) and entry and isinstance(entry[0], str) for entry in vocab):
                raise FolderError(f"{self.path}: model.vocab list entries must be [piece, score] with a string piece")
            self.vocab = {entry[0]: i for i, entry in enumerate(vocab)}
            self.highest = len(vocab) - 1
        else:
            raise FolderError(f"{self.path}: no model vocab (model.vocab is missing or not an object/list)")

    def post_processor(self) -> Any:
        """The ``post_processor`` object (None when absent or null). Read without decoding the vocab."""
        # tokenizers writes it before "model", writers that sort keys after it: never search or decode the vocab
        at = _key(self.data, b"post_processor", b"{", end=self.model_at)
        end = self.model_at
        if at < 0 and self.vocab_span is not None:
            at, end = _key(self.data, b"post_processor", b"{", start=self.vocab_span[1]), len(self.data)
        if at < 0:
            return None
        try:
            value, _ = json.JSONDecoder().raw_decode(self.data[at:end].decode("utf-8", errors="replace"))
        except (ValueError, RecursionError):
            return None
        return value

    def lookup(self, text: str) -> int | None:
        if self.vocab is not None:
            return self.vocab.get(text)
        assert self.vocab_span is not None
        start, end = self.vocab_span
        # tokenizers writes raw UTF-8; a file re-saved by Python's json may use \uXXXX escapes instead
        for ascii_only in (False, True):
            needle = json.dumps(text, ensure_ascii=ascii_only).encode("utf-8")
            pattern = re.compile(re.escape(needle) + rb"\s*:\s*(\d+)")
            for match in pattern.finditer(self.data, start, end):
                if self.data[match.start() - 1 : match.start()] in (b"{", b",", b" ", b"\n", b"\t", b"\r"):
                    try:
                        return int(match.group(1))
                    except ValueError:  # more digits than int() converts
                        raise FolderError(f"{self.path}: the id of {text!r} in model.vocab is not a usable int") from None
            if text.isascii():
                break
        return None

    def token_for_id(self, token_id: int) -> str | None:
        """The vocab string of ``token_id`` (display only)."""
        if self.vocab is not None:
            return next((text for text, i in self.vocab.items() if i == token_id), None)
        assert self.vocab_span is not None
        start, end = self.vocab_span
        match = re.compile(rb'"((?:[^"\\]|\\.)*)"\s*:\s*' + str(token_id).encode() + rb"\s*[,}]").search(self.data, start, end)
        if match is None:
            return None
        try:
            value: str = json.loads(b'"' + match.group(1) + b'"')
        except ValueError:
            return None
        return value


def _sentencepiece(folder: Path, files: list[str], notes: list[str]) -> dict[str, int] | None:
    """Piece -> id of ``tokenizer.model`` (a SentencePiece-only folder, no ``tokenizer.json``), read with the
    ``sentencepiece`` package as transformers' slow tokenizers do; None (and a note) without the package or the
    file. The ids of special tokens named in ``tokenizer_config.json`` come from here when
    ``added_tokens_decoder`` does not list them. Raises :class:`FolderError` for a file SentencePiece cannot load."""
    path = folder / "tokenizer.model"
    if not os.path.lexists(path):
        return None
    try:
        import sentencepiece
    except ImportError:
        notes.append(f"{path}: not read (install sentencepiece): special-token ids from tokenizer_config.json only")
        return None
    processor = sentencepiece.SentencePieceProcessor()
    try:
        processor.Load(str(path))
    except (OSError, RuntimeError) as exc:
        raise FolderError(f"{path}: not a SentencePiece model ({exc})") from None
    files.append(str(path))
    return {processor.IdToPiece(index): index for index in range(processor.GetPieceSize())}


def _read_tokenizer(folder: Path) -> _Tokenizer | None:
    config_path, json_path = folder / "tokenizer_config.json", folder / "tokenizer.json"
    have_config, have_json = os.path.lexists(config_path), os.path.lexists(json_path)
    if not have_config and not have_json:
        return None
    files: list[str] = []
    notes: list[str] = []
    config: dict[str, Any] = {}
    if have_config:
        config = read_json(config_path)
        files.append(str(config_path))
    special_map = _optional(folder, "special_tokens_map.json") or {}
    if special_map:
        files.append(str(folder / "special_tokens_map.json"))

    strings: dict[str, int] = {}
    by_id: dict[int, str] = {}
    special: set[int] = set()
    backend = None
    if have_json:
        backend = _TokenizerJson(json_path)
        files.append(str(json_path))
        for entry in backend.added or []:
            if not isinstance(entry, Mapping):
                raise FolderError(f"{json_path}: each added token must be an object, got {entry!r}")
            _add_string(strings, by_id, entry.get("content"), entry.get("id"), json_path)
            if entry.get("special") is True and is_id(entry.get("id")):
                special.add(entry["id"])
    decoder = config.get("added_tokens_decoder", {})
    if not isinstance(decoder, Mapping):
        raise FolderError(f"{config_path}: added_tokens_decoder must be an object")
    for key, entry in decoder.items():
        try:
            added_id = int(key)
        except ValueError:
            raise FolderError(f"{config_path}: added_tokens_decoder key {key!r} is not an id") from None
        content = entry.get("content") if isinstance(entry, Mapping) else None
        _add_string(strings, by_id, content, added_id, config_path)
        if isinstance(entry, Mapping) and entry.get("special") is True:
            special.add(added_id)

    pieces = _sentencepiece(folder, files, notes) if backend is None else None
    variables: dict[str, str | None] = {}
    ids: dict[str, Any] = {}
    for name in NAMED_SPECIALS:
        key = f"{name}_token"
        # like transformers: a value set in tokenizer_config wins over special_tokens_map
        source_path, value = config_path, config.get(key)
        if value is None or value == "":  # only absent/empty falls back: 0 or false is an invalid value, not "unset"
            source_path, value = folder / "special_tokens_map.json", special_map.get(key)
        text = _token_text(value, source_path, key)
        variables[key] = text
        token_id = None
        if text is not None:
            token_id = strings.get(text)
            if token_id is None and backend is not None:
                token_id = backend.lookup(text)
            if token_id is None and pieces is not None:
                token_id = pieces.get(text)
            if token_id is not None:
                strings.setdefault(text, token_id)
                if is_id(token_id):
                    special.add(token_id)  # the named special tokens are special tokens, flagged or not
        if name in FIELDS:
            ids[name] = token_id

    highest = max([backend.highest if backend and backend.highest is not None else -1, *by_id], default=-1)
    if pieces:  # a SentencePiece model: its pieces are the vocabulary, added tokens follow
        highest = max(highest, len(pieces) - 1)
    length = highest + 1 if (backend is not None or by_id or pieces) and highest >= 0 else None

    # the tokenizer's template (PreTrainedTokenizerBase.from_pretrained, tokenization_utils_base.py):
    # chat_template.jinja over tokenizer_config.json's "chat_template"
    template: Any = config.get("chat_template")
    jinja_path = folder / "chat_template.jinja"
    json_template_path = folder / "chat_template.json"
    if os.path.lexists(jinja_path):
        template = _read_text(jinja_path)
        files.append(str(jinja_path))
    # a processor's own template wins: processor.apply_chat_template renders it (ProcessorMixin.get_processor_dict,
    # processing_utils.py: processor_config.json's "chat_template" when not null, else the legacy
    # chat_template.json, else chat_template.jinja as above)
    processor_path = folder / "processor_config.json"
    processor = _optional(folder, processor_path.name)
    if processor is not None:
        files.append(str(processor_path))
    if processor is not None and processor.get("chat_template") is not None:
        template = processor["chat_template"]
    elif os.path.lexists(json_template_path):
        template = read_json(json_template_path).get("chat_template")
        files.append(str(json_template_path))
    if backend is not None:  # the post-processor decides what encoding adds (transformers 5 ignores the flags then)
        edges = post_processor_edges(backend.post_processor())
    else:  # SentencePiece-only folders: the slow tokenizer's flags
        edges = (
            [str(variables["bos_token"])] if config.get("add_bos_token") is True and variables.get("bos_token") else [],
            [str(variables["eos_token"])] if config.get("add_eos_token") is True and variables.get("eos_token") else [],
        )
        if "add_bos_token" not in config and "add_eos_token" not in config:
            edges = None
    padding_side = config.get("padding_side")
    if padding_side is not None and padding_side not in ("left", "right"):
        raise FolderError(f'{config_path}: padding_side must be "left" or "right", got {padding_side!r}')
    by_piece = {index: piece for piece, index in pieces.items()} if pieces else None
    return _Tokenizer(
        ids, strings, length, template, variables, files, backend, edges, padding_side, frozenset(special), notes, by_piece
    )


def post_processor_edges(post: Any) -> tuple[list[str], list[str]]:
    """Token strings a ``tokenizer.json`` post-processor adds before and after a single sequence.

    ``TemplateProcessing``: the ``SpecialToken`` items of ``single`` before / after ``Sequence`` A (resolved
    through ``special_tokens``); ``BertProcessing`` / ``RobertaProcessing``: ``cls`` / ``sep``; a ``Sequence``
    of processors: all of them; anything else (``ByteLevel``, null): nothing.
    """
    if not isinstance(post, Mapping):
        return [], []
    kind = post.get("type")
    if kind == "Sequence":
        before: list[str] = []
        after: list[str] = []
        for inner in post.get("processors") or []:
            b, a = post_processor_edges(inner)
            before += b
            after += a
        return before, after
    if kind in ("BertProcessing", "RobertaProcessing"):
        cls, sep = post.get("cls"), post.get("sep")
        first = [str(cls[0])] if isinstance(cls, list) and cls else []
        return first, [str(sep[0])] if isinstance(sep, list) and sep else []
    if kind != "TemplateProcessing" or not isinstance(post.get("single"), list):
        return [], []
    declared = post.get("special_tokens")
    specials: Mapping[str, Any] = declared if isinstance(declared, Mapping) else {}
    before, after, seen_sequence = [], [], False
    for item in post["single"]:
        if isinstance(item, Mapping) and "Sequence" in item:
            seen_sequence = True
        elif isinstance(item, Mapping) and isinstance(item.get("SpecialToken"), Mapping):
            name = item["SpecialToken"].get("id")
            entry = specials.get(name) if isinstance(name, str) else None
            tokens = entry.get("tokens") if isinstance(entry, Mapping) else None
            texts = [str(token) for token in tokens] if isinstance(tokens, list) and tokens else [str(name)]
            (after if seen_sequence else before).extend(texts)
    return before, after


def _ids(data: Mapping[str, Any]) -> dict[str, Any]:
    return {name: data.get(f"{name}_token_id") for name in FIELDS}


#: where ``PreTrainedConfig.get_text_config()`` (transformers configuration_utils.py) looks for the nested text
#: config: an encoder's name, then the decoder's names (``get_text_config(decoder=True)`` looks only there)
ENCODER_CONFIG_NAMES = ("text_encoder",)
DECODER_CONFIG_NAMES = ("decoder", "generator", "text_config")


def _text_config(config: dict[str, Any]) -> dict[str, Any]:
    """The language model's config, picked as the objects path picks it (``objects.text_config``): as
    ``get_text_config()`` does (transformers configuration_utils.py; Trainer's alignment edits that one), the one
    nested ``text_encoder`` / ``decoder`` / ``generator`` / ``text_config`` object; where several make that
    ambiguous, the one decoder-side object (``get_text_config(decoder=True)``, generation's); else the top level.

    Keys a nested ``text_config`` leaves out come from the top level (transformers 4.x saves only non-default
    values in nested configs). A nested ``decoder`` is a whole model's config (``EncoderDecoderConfig``): its ids
    are its own, and the top-level ``pad_token_id`` beside it is another attribute (the one training's
    ``shift_tokens_right`` reads), so nothing is merged into it."""
    nested = [name for name in (*ENCODER_CONFIG_NAMES, *DECODER_CONFIG_NAMES) if isinstance(config.get(name), dict)]
    if len(nested) > 1:
        nested = [name for name in nested if name in DECODER_CONFIG_NAMES]
    if len(nested) != 1:
        return config
    inner: dict[str, Any] = config[nested[0]]
    if nested[0] != "text_config":
        return inner
    merged = {key: config[key] for key in ("vocab_size", *(f"{n}_token_id" for n in FIELDS)) if key in config}
    merged.update(inner)
    return merged


def _two_models(config: dict[str, Any]) -> bool:
    """An encoder-decoder made of two models (``EncoderDecoderConfig``, ``VisionEncoderDecoderConfig``,
    ``SpeechEncoderDecoderConfig``): config.json nests a whole ``encoder`` and ``decoder`` config."""
    return isinstance(config.get("encoder"), dict) and isinstance(config.get("decoder"), dict)


def _vocab_size(value: Any, path: Path, key: str) -> Any:
    if value is not None and (not is_id(value) or value <= 0):
        raise FolderError(f"{path}: {key} must be a positive int, got {value!r}")
    return value


@dataclass
class FolderLayout:
    """What :func:`read_folder` found: the layout, the files it read (paths), and the adapter's config."""

    layout: TokenLayout
    files: list[str]
    adapter: dict[str, Any] | None = None


def _folder(path: Path, what: str) -> Path:
    try:
        if not path.exists():
            raise FolderError(f"{path}: {what} folder does not exist")
        if not path.is_dir():
            raise FolderError(f"{path}: {what} is not a folder")
    except OSError as exc:
        raise FolderError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return path


def read_folder(path: str | Path, adapter: str | Path | None = None) -> FolderLayout:
    """The layout of a checkpoint folder, with an adapter folder's tokenizer/config files taking precedence.

    Reads ``config.json`` (its nested ``text_config`` or ``decoder``, as ``get_text_config(decoder=True)``
    picks it; a two-model encoder-decoder's ``encoder`` / ``decoder`` vocab sizes), ``generation_config.json``,
    ``tokenizer_config.json``, ``special_tokens_map.json``, ``tokenizer.json`` and the chat template (a
    processor's ``processor_config.json`` or ``chat_template.json``, else ``chat_template.jinja`` or
    ``tokenizer_config.json``), and the embedding rows from the safetensors headers
    (``model.safetensors`` or the shards of ``model.safetensors.index.json``; the adapter's
    ``adapter_model.safetensors``, whose rows win where it carries embedding matrices; see
    :mod:`pytest_tokenguard.static.weights`); never imports torch or transformers, never unpickles, never runs
    code from the folder. Returns a :class:`FolderLayout` (``layout``, ``files`` read, ``adapter`` config).
    Raises :class:`FolderError` naming the file and the problem (missing folder or ``config.json``, bad JSON,
    invalid ids, an adapter folder without ``adapter_config.json`` or adapter weights, a corrupt safetensors
    header).
    """
    base = _folder(Path(path), "checkpoint")
    adapter_dir = _folder(Path(adapter), "adapter") if adapter is not None else None
    files: list[str] = []
    adapter_config = None
    if adapter_dir is not None:
        adapter_config_path = adapter_dir / "adapter_config.json"
        if not os.path.lexists(adapter_config_path):
            raise FolderError(f"{adapter_config_path}: missing (not a peft adapter folder)")
        adapter_config = read_json(adapter_config_path)
        files.append(str(adapter_config_path))

    def first_json(name: str) -> tuple[Path, dict[str, Any] | None]:
        for folder in (adapter_dir, base):
            if folder is not None and os.path.lexists(folder / name):
                files.append(str(folder / name))
                return folder / name, read_json(folder / name)
        return base / name, None

    config_path, config = first_json("config.json")
    if config is None:
        raise FolderError(f"{config_path}: missing (a checkpoint folder needs config.json)")
    _, generation = first_json("generation_config.json")
    tokenizer = _read_tokenizer(adapter_dir) if adapter_dir is not None else None
    if tokenizer is None:
        tokenizer = _read_tokenizer(base)

    text_config = _text_config(config)
    vocab_size = _vocab_size(text_config.get("vocab_size"), config_path, "vocab_size")
    layout = TokenLayout(
        model=_ids(text_config),
        generation=_ids(generation) if generation is not None else None,
        tokenizer=tokenizer.ids if tokenizer is not None else None,
        vocab_size=vocab_size,
        encoder_decoder=config.get("is_encoder_decoder") is True,
    )
    two_models = _two_models(config)
    if two_models:  # ids and vocab_size above are the decoder's (_text_config); the encoder's vocab is its own
        for side in ("encoder", "decoder"):
            size = _vocab_size(config[side].get("vocab_size"), config_path, f"{side}.vocab_size")
            if size is not None:  # a vision or speech encoder has none: it embeds no tokens
                layout.side_vocab_sizes[side] = size
    if layout.encoder_decoder:
        # the top level's, which EncoderDecoderModel's training (shift_tokens_right) reads too
        layout.decoder_start = {
            "model": config.get("decoder_start_token_id"),
            "generation": generation.get("decoder_start_token_id") if generation is not None else None,
        }
    if generation is None:
        layout.notes.append("no generation_config.json: generation checks use the model config")
    if tokenizer is None:
        layout.notes.append("no tokenizer files (tokenizer.json / tokenizer_config.json): tokenizer checks skipped")
    else:
        files.extend(tokenizer.files)
        layout.notes.extend(tokenizer.notes)
        layout.tokenizer_length = tokenizer.length
        layout.padding_side = tokenizer.padding_side
        layout.special_ids = tokenizer.special_ids
        if tokenizer.template:
            layout.end_of_turn, note = end_of_turn(tokenizer.template, tokenizer.strings, tokenizer.variables)
            if note:
                layout.notes.append(note)
            layout.template_starts_with_bos = starts_with_token(
                tokenizer.template, tokenizer.variables, tokenizer.variables.get("bos_token")
            )
            layout.has_chat_template = True
            layout.assistant_mask_end_of_turn, note = assistant_mask_end_of_turn(
                tokenizer.template, tokenizer.strings, tokenizer.variables
            )
            if note and layout.end_of_turn is not None:  # otherwise the end-of-turn note says why
                layout.notes.append(note)
        if tokenizer.edges is not None:
            before, after = tokenizer.edges
            layout.adds_bos = bool(tokenizer.variables.get("bos_token")) and tokenizer.variables.get("bos_token") in before
            layout.adds_eos = bool(tokenizer.variables.get("eos_token")) and tokenizer.variables.get("eos_token") in after
        by_id = {token_id: text for text, token_id in tokenizer.strings.items()}
        for source in (layout.model, layout.generation, layout.tokenizer):
            for name in FIELDS:
                for value in id_list(source[name]) if source else []:
                    if not is_id(value) or value < 0:
                        continue
                    text = by_id.get(value)
                    if text is None and value < (layout.tokenizer_length or 0):
                        text = tokenizer.token_for_id(value)  # a plain vocab token, as the object API shows
                    if text is not None:
                        layout.token_strings[value] = text
        if layout.end_of_turn is not None and is_id(layout.end_of_turn[1]):
            layout.token_strings[layout.end_of_turn[1]] = layout.end_of_turn[0]
    _read_rows(layout, files, base, adapter_dir, two_models)
    return FolderLayout(layout, files, adapter_config)


def _read_rows(layout: TokenLayout, files: list[str], base: Path, adapter_dir: Path | None, two_models: bool) -> None:
    """Embedding rows from the safetensors headers: the base's, replaced by the adapter's where it carries them.
    A two-model encoder-decoder's rows are per side, and its ``embedding_rows`` are the decoder's (the model's
    own ``get_input_embeddings()`` is the encoder's: ``layout_from_objects`` reads the decoder's too)."""
    from pytest_tokenguard.static.weights import INPUT, OUTPUT, SIDES, adapter_rows, base_rows  # (it imports this module)

    found = base_rows(base, sides=two_models)
    files.extend(found.files)
    layout.notes.extend(found.notes)
    layout.base_rows = found.rows
    layout.embedding_rows = found.rows.get(INPUT)
    if two_models:
        layout.side_rows = {side: rows for side in SIDES if (rows := found.side(side)) is not None}
        layout.embedding_rows = layout.side_rows.get("decoder")
    if adapter_dir is None:
        return
    carried = adapter_rows(adapter_dir)
    files.extend(carried.files)
    layout.notes.extend(carried.notes)
    layout.adapter_rows = carried.rows
    # loading needs a base of the adapter's rows (resize_token_embeddings gives both matrices the same count)
    rows = carried.rows.get(INPUT, carried.rows.get(OUTPUT))
    if rows is not None:
        layout.embedding_rows = rows
        if not found.rows:
            layout.notes.append(
                f"the adapter carries {rows}-row embeddings and the base checkpoint's rows are unknown: "
                f"PeftModel.from_pretrained needs a base with {rows} rows (model.resize_token_embeddings({rows}))"
            )
