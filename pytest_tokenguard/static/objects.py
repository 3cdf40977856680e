"""Read a :class:`TokenLayout` from live transformers/peft objects (duck-typed; imports nothing heavy)."""

from __future__ import annotations

from typing import Any

from pytest_tokenguard.static.chat_template import assistant_mask_end_of_turn, end_of_turn, starts_with_token
from pytest_tokenguard.static.layout import FIELDS, NAMED_SPECIALS, TokenLayout, id_list, is_id


def base_model(model: Any) -> Any:
    """A peft ``PeftModel`` -> the transformers model under it; anything else unchanged."""
    get_base = getattr(model, "get_base_model", None)
    if callable(get_base) and hasattr(model, "peft_config"):
        return get_base()
    return model


def text_config(config: Any) -> Any:
    """The config that holds the language model's tokens: ``config.get_text_config()`` (transformers
    configuration_utils.py; what ``Trainer``'s special-token alignment edits): a multimodal config's nested
    ``text_config``, an ``EncoderDecoderConfig``'s ``decoder`` (also what ``get_text_config(decoder=True)``,
    generation's, returns). Where several nested configs make it ambiguous (it raises ``ValueError``), the
    decoder's; where that is ambiguous too, the config itself. Not ``decoder=True`` first: on a flat T5/BART
    config that returns a copy, and edits to a copy are lost."""
    getter = getattr(config, "get_text_config", None)
    if not callable(getter):
        return config
    try:
        return getter()
    except TypeError:
        return config
    except ValueError:
        try:
            return getter(decoder=True)
        except (TypeError, ValueError):
            return config


def two_model_sides(config: Any) -> dict[str, Any]:
    """The nested ``encoder`` and ``decoder`` configs of an encoder-decoder made of two models
    (``EncoderDecoderConfig``, ``VisionEncoderDecoderConfig``, ``SpeechEncoderDecoderConfig``); empty for any
    other config (T5/BART keep both halves in one flat config)."""
    sides = {side: getattr(config, side, None) for side in ("encoder", "decoder")}
    if all(callable(getattr(sub, "to_dict", None)) for sub in sides.values()):
        return sides
    return {}


def unwrap_tokenizer(tokenizer: Any) -> Any:
    """A processor carrying a tokenizer -> that tokenizer."""
    if tokenizer is not None and not hasattr(tokenizer, "eos_token_id") and hasattr(tokenizer, "tokenizer"):
        return tokenizer.tokenizer
    return tokenizer


def chat_template_of(tokenizer: Any) -> Any:
    """The chat template a tokenizer or processor applies: a processor's own (``processor.chat_template``: what
    ``processor.apply_chat_template`` renders, and what its ``save_pretrained`` writes at the folder level) before
    the template of the tokenizer inside it."""
    own = getattr(tokenizer, "chat_template", None)
    inner = unwrap_tokenizer(tokenizer)
    if own or inner is tokenizer:
        return own
    return getattr(inner, "chat_template", None)


def _ids(obj: Any) -> dict[str, Any]:
    return {name: getattr(obj, f"{name}_token_id", None) for name in FIELDS}


def embedding_rows(model: Any) -> Any:
    """Rows of the model's input embedding matrix (``get_input_embeddings()``), or None when it has none."""
    getter = getattr(model, "get_input_embeddings", None)
    if not callable(getter):
        return None
    try:
        embeddings = getter()
    except (NotImplementedError, AttributeError):
        return None
    rows = getattr(embeddings, "num_embeddings", None)
    if rows is None and hasattr(embeddings, "weight"):
        rows = int(embeddings.weight.shape[0])
    return rows


def _special_strings(tokenizer: Any) -> dict[str, int]:
    """Token string -> id for added tokens and the named special tokens."""
    strings: dict[str, int] = {}
    getter = getattr(tokenizer, "get_added_vocab", None)
    if callable(getter):
        strings.update(getter())
    for name in NAMED_SPECIALS:
        text, token_id = getattr(tokenizer, f"{name}_token", None), getattr(tokenizer, f"{name}_token_id", None)
        if isinstance(text, str) and isinstance(token_id, int):
            strings.setdefault(text, token_id)
    return strings


def special_ids(tokenizer: Any) -> frozenset[int]:
    """Ids of the tokenizer's declared special tokens: added tokens flagged ``special`` (``added_tokens_decoder``)
    and the named ones (bos/eos/pad/unk ...), as the folder reader collects them from the saved files."""
    ids: set[int] = set()
    decoder = getattr(tokenizer, "added_tokens_decoder", None)
    if isinstance(decoder, dict):
        ids.update(i for i, token in decoder.items() if isinstance(i, int) and getattr(token, "special", False) is True)
    for name in NAMED_SPECIALS:
        token_id = getattr(tokenizer, f"{name}_token_id", None)
        if isinstance(token_id, int) and not isinstance(token_id, bool):
            ids.add(token_id)
    return frozenset(ids)


def tokenizer_end_of_turn(tokenizer: Any, strings: dict[str, int] | None = None) -> tuple[tuple[str, int] | None, str | None]:
    """The chat template's end-of-turn ``(token, id)`` (or ``None`` and why); no template -> ``(None, None)``.
    ``tokenizer``: a tokenizer or a processor (its own template first, see :func:`chat_template_of`)."""
    template = chat_template_of(tokenizer)
    tokenizer = unwrap_tokenizer(tokenizer)
    if not template:
        return None, None
    variables = {f"{name}_token": getattr(tokenizer, f"{name}_token", None) for name in NAMED_SPECIALS}
    return end_of_turn(template, strings if strings is not None else _special_strings(tokenizer), variables)


_PROBE = "tokenguard probe text"


def encoding_edges(tokenizer: Any) -> tuple[bool | None, bool | None]:
    """Whether ``tokenizer(text)`` (``add_special_tokens=True``, the default) puts bos before and eos after the
    text's own ids, found by encoding a probe both ways with the tokenizer itself. ``(None, None)`` when the
    tokenizer cannot encode."""
    try:
        probe = _PROBE
        plain = list(tokenizer(probe, add_special_tokens=False)["input_ids"])
        if not plain:  # a tiny vocabulary that cannot spell the probe: any plain vocabulary entry will do
            specials = set(getattr(tokenizer, "all_special_ids", ()))
            probe = next((text for text, i in tokenizer.get_vocab().items() if i not in specials and text.strip()), probe)
            plain = list(tokenizer(probe, add_special_tokens=False)["input_ids"])
        with_specials = list(tokenizer(probe)["input_ids"])
    except Exception:  # a stand-in or exotic tokenizer: the other checks still run
        return None, None
    before, after = _around(with_specials, plain)
    if before is None or after is None:
        return None, None
    bos, eos = getattr(tokenizer, "bos_token_id", None), getattr(tokenizer, "eos_token_id", None)
    return (is_id(bos) and bos in before), (is_id(eos) and eos in after)


def _around(whole: list[Any], part: list[Any]) -> tuple[list[Any] | None, list[Any] | None]:
    """The ids ``whole`` has before and after ``part`` (the text's own ids). A text the vocabulary cannot encode
    at all leaves only the added ids: each side then sees all of them."""
    if not part:
        return whole, whole
    for start in range(len(whole) - len(part) + 1):
        if whole[start : start + len(part)] == part:
            return whole[:start], whole[start + len(part) :]
    return None, None


def layout_from_objects(model_or_config: Any, tokenizer: Any = None, generation_config: Any = None) -> TokenLayout:
    """Layout of a model (``PreTrainedModel``, peft ``PeftModel``) or a bare config, a tokenizer or processor
    (its own chat template first, :func:`chat_template_of`), and a generation config (default: the model's own).
    A two-model encoder-decoder (``EncoderDecoderModel``) is read per side: ``config.encoder`` /
    ``config.decoder`` vocab sizes and ``model.encoder`` / ``model.decoder`` input embedding rows."""
    model = base_model(model_or_config)
    is_model = hasattr(model, "config")  # a config has no .config
    top = model.config if is_model else model
    config = text_config(top)
    if generation_config is None and is_model:
        generation_config = getattr(model, "generation_config", None)
    processor, tokenizer = tokenizer, unwrap_tokenizer(tokenizer)

    layout = TokenLayout(
        model=_ids(config),
        generation=_ids(generation_config) if generation_config is not None else None,
        tokenizer=_ids(tokenizer) if tokenizer is not None else None,
        embedding_rows=embedding_rows(model) if is_model else None,
        vocab_size=getattr(config, "vocab_size", None),
        encoder_decoder=getattr(top, "is_encoder_decoder", False) is True,
    )
    sides = two_model_sides(top)
    if sides:
        # get_input_embeddings() of an EncoderDecoderModel is the encoder's; generation, the loss and the ids
        # above are the decoder's (model.decoder), so embedding_rows is too and the encoder is its own side
        for half, half_config in sides.items():
            size = getattr(half_config, "vocab_size", None)
            if size is not None:  # a vision or speech encoder has none: it embeds no tokens
                layout.side_vocab_sizes[half] = size
            half_rows = embedding_rows(getattr(model, half, None)) if is_model else None
            if isinstance(half_rows, int) and not isinstance(half_rows, bool):
                layout.side_rows[half] = half_rows
        layout.embedding_rows = layout.side_rows.get("decoder") if is_model else None
    if layout.encoder_decoder:
        # the top level's: EncoderDecoderModel's training (shift_tokens_right) reads self.config's
        layout.decoder_start = {
            "model": getattr(top, "decoder_start_token_id", None),
            "generation": getattr(generation_config, "decoder_start_token_id", None) if generation_config is not None else None,
        }
    if tokenizer is not None:
        layout.adds_bos, layout.adds_eos = encoding_edges(tokenizer)
        # what save_pretrained writes to tokenizer_config.json (init kwargs, with their current values) and what
        # loading a folder gives back: a padding side the tokenizer merely defaults to is not claimed
        init_kwargs = getattr(tokenizer, "init_kwargs", None) or {}
        side = getattr(tokenizer, "padding_side", None) if "padding_side" in init_kwargs else None
        layout.padding_side = side if side in ("left", "right") else None
        layout.special_ids = special_ids(tokenizer)
        template = chat_template_of(processor)
        variables = {f"{name}_token": getattr(tokenizer, f"{name}_token", None) for name in NAMED_SPECIALS}
        if template:
            layout.template_starts_with_bos = starts_with_token(template, variables, variables.get("bos_token"))
        strings = _special_strings(tokenizer)
        # highest id + 1, as the folder reader counts: ids past the embedding rows are what matters
        layout.tokenizer_length = max([len(tokenizer), *(i + 1 for i in strings.values() if isinstance(i, int))])
        layout.end_of_turn, note = tokenizer_end_of_turn(processor, strings)
        if note:
            layout.notes.append(note)
        if template:
            layout.has_chat_template = True
            layout.assistant_mask_end_of_turn, note = assistant_mask_end_of_turn(template, strings, variables)
            if note and layout.end_of_turn is not None:  # otherwise the end-of-turn note says why
                layout.notes.append(note)
        wanted = {
            v
            for src in (layout.model, layout.generation, layout.tokenizer)
            if src
            for name in FIELDS
            for v in id_list(src[name])
            if is_id(v)
        }
        if layout.end_of_turn is not None and is_id(layout.end_of_turn[1]):
            wanted.add(layout.end_of_turn[1])
        by_id = {token_id: text for text, token_id in strings.items()}
        for token_id in sorted(wanted):
            text = by_id.get(token_id)
            if text is None and 0 <= token_id < layout.tokenizer_length:
                converted = tokenizer.convert_ids_to_tokens(token_id)
                text = converted if isinstance(converted, str) else None
            if text is not None:
                layout.token_strings[token_id] = text
    return layout
