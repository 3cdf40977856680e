"""The special-token layout of a checkpoint: plain values, whichever way they were read.

Live objects (``objects.py``) and checkpoint folders (``folder.py``) are both turned into a
:class:`TokenLayout`, and only this form is checked, so the two paths cannot disagree.
Values are kept exactly as found (``int``, ``list``, ``None``, or something invalid such as a
string) so the checks can report invalid ones instead of guessing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: The special tokens every check compares, in table order.
FIELDS = ("bos", "eos", "pad")
#: Their attribute names on configs, generation configs and tokenizers (``bos_token_id`` ...).
TOKEN_ID_ATTRIBUTES = tuple(f"{name}_token_id" for name in FIELDS)
#: Named special tokens a tokenizer may carry (``tokenizer.unk_token`` ...): FIELDS plus unk.
NAMED_SPECIALS = (*FIELDS, "unk")
#: source key -> heading used in tables and messages
SOURCES = {"model": "model config", "generation": "generation config", "tokenizer": "tokenizer"}


def is_id(value: Any) -> bool:
    """A usable token id: an int that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def id_list(value: Any) -> list[Any]:
    """``None`` -> ``[]``, a scalar -> ``[scalar]``, a list/tuple -> its items (invalid items kept)."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def valid_ids(value: Any) -> list[int]:
    return [v for v in id_list(value) if is_id(v)]


@dataclass
class TokenLayout:
    """bos/eos/pad as declared by each source, plus what decides whether an id can be embedded.

    ``model``/``generation``/``tokenizer`` map ``"bos"``/``"eos"``/``"pad"`` to the raw value, or are
    ``None`` when that source is absent (e.g. no generation config, or no tokenizer for ``generate``).
    """

    model: dict[str, Any] | None = None
    generation: dict[str, Any] | None = None
    tokenizer: dict[str, Any] | None = None
    #: rows of the input embedding matrix (the model can embed ids below this); for a checkpoint folder with
    #: an adapter that carries its own embedding matrices, the adapter's rows (what the loaded model has)
    embedding_rows: Any = None
    #: ``vocab_size`` of the model (text) config
    vocab_size: Any = None
    #: number of ids the tokenizer can produce (highest id + 1)
    tokenizer_length: int | None = None
    #: the chat template's end-of-turn token as ``(string, id)``
    end_of_turn: tuple[str, Any] | None = None
    #: id -> token string, for display only
    token_strings: dict[int, str] = field(default_factory=dict)
    #: why a part could not be checked (e.g. the chat template failed to render)
    notes: list[str] = field(default_factory=list)
    #: the tokenizer prepends bos / appends eos when it encodes text with its defaults
    #: (``add_special_tokens=True``); None when unknown
    adds_bos: bool | None = None
    adds_eos: bool | None = None
    #: the chat template's rendered conversation starts with the bos string (``{{ bos_token }}``); None when there
    #: is no template (``has_chat_template``) or it does not render
    template_starts_with_bos: bool | None = None
    #: the tokenizer (or processor) has a chat template
    has_chat_template: bool = False
    #: a chat template with ``{% generation %}`` blocks: ``(token, id, inside)`` for the end of turn it writes
    #: after an assistant reply, ``inside`` when that token lies in the assistant mask
    #: (``apply_chat_template(..., return_assistant_tokens_mask=True)``, trl's ``assistant_only_loss``); None
    #: without generation blocks, or when it cannot be told (a note says why)
    assistant_mask_end_of_turn: tuple[str, Any, bool] | None = None
    #: the model is an encoder-decoder (config ``is_encoder_decoder``): prompts ending in eos are normal there
    encoder_decoder: bool = False
    #: checkpoint folders only: rows per matrix (``input_embeddings``, ``output_embeddings`` when untied) of the
    #: base checkpoint's weights, and of the matrices a peft adapter carries (none for a plain LoRA adapter)
    base_rows: dict[str, int] = field(default_factory=dict)
    adapter_rows: dict[str, int] = field(default_factory=dict)
    #: ids of the tokenizer's declared special tokens (added tokens flagged ``special``, and the named ones):
    #: deliberate stop ids such as ``<|tool_response>`` are among them
    special_ids: frozenset[int] = frozenset()
    #: encoder-decoders: ``decoder_start_token_id`` of the model config (top level) and of the generation config
    decoder_start: dict[str, Any] = field(default_factory=dict)
    #: the tokenizer's saved ``padding_side`` (``tokenizer_config.json``; a live tokenizer: what save_pretrained
    #: would write), None when not saved (the tokenizer class's default applies)
    padding_side: str | None = None
    #: encoder-decoders made of two models whose config.json nests an ``encoder`` and a ``decoder`` config
    #: (``EncoderDecoderModel`` such as bert2bert, ``VisionEncoderDecoderModel``): per side, that config's
    #: ``vocab_size`` and the rows of that side's input embedding matrix (absent when unknown, e.g. a vision
    #: encoder embeds no tokens). ``vocab_size`` / ``embedding_rows`` above are then the decoder's: generation and
    #: the loss use it (``config.get_text_config(decoder=True)``); the tokenizer's ids must also fit the encoder.
    side_vocab_sizes: dict[str, Any] = field(default_factory=dict)
    side_rows: dict[str, int] = field(default_factory=dict)

    def source(self, name: str) -> dict[str, Any] | None:
        value: dict[str, Any] | None = getattr(self, name)
        return value

    @property
    def rows(self) -> int | None:
        """How many ids the model can embed: the embedding rows, else the config vocab size."""
        for value in (self.embedding_rows, self.vocab_size):
            if is_id(value) and value > 0:
                return int(value)
        return None

    def side_limit(self, side: str) -> int | None:
        """How many ids one side (``"encoder"`` / ``"decoder"``) of a two-model encoder-decoder can embed: its
        embedding rows, else its config's vocab size; None when unknown or not such a model."""
        for value in (self.side_rows.get(side), self.side_vocab_sizes.get(side)):
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
        return None

    def describe(self, value: Any) -> str:
        """``151645 '<|im_end|>'``, ``[1, 107]``, ``None``."""
        if value is None:
            return "None"
        if isinstance(value, (list, tuple)):
            return "[" + ", ".join(self.describe(v) for v in value) + "]"
        if is_id(value):
            text = self.token_strings.get(value)
            return f"{value} {text!r}" if text is not None else str(value)
        return repr(value)
