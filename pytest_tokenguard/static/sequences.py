"""Sequence checks (TG3xx) on the token-id batches that reach training and ``generate()``.

The TG2xx checks compare what configs and tokenizer *declare*; these look at the ids a batch actually
holds: a doubled BOS (TG301), a prompt that already ends in EOS or the chat end of turn (TG302), EOS masked
out of every label (TG303), rows without an end (TG304), padding inside a row (TG305), pad ids attended as
content (TG306), ids the model cannot embed (TG307), right padding before ``generate()`` (TG308), labels on
padded positions (TG309), labels that are media placeholder ids a processor expands (TG310), sequences that start
without the BOS the model was trained with (TG311), preference completions ending in a doubled eos or none (TG312).

A batch is ``rows x positions``: ``input_ids`` of shape (batch, sequence), optional ``attention_mask`` and
``labels`` of the same shape; rows and positions count from 0. The ids to look for come from the tokenizer
(``bos/eos/pad/unk_token_id``, the chat template's end of turn) and the model (``config.eos_token_id``,
the embedding rows); see :func:`check_batch`.

Batches of other trainer shapes (trl's preference trainers) carry several token fields: every key ``input_ids``
or ``<prefix>input_ids`` with ``<prefix>attention_mask``, ``<prefix>labels`` and ``<prefix>completion_mask``
(:func:`token_fields`); :func:`check_fields` checks each of them, :func:`check_batch` one (``prefix=``).

Tensors are checked with torch, lists and numpy arrays with numpy, on whole arrays: no Python loop over
tokens, only over the few offending rows a message names. numpy is imported when a batch is checked; torch
is never imported here (a batch holding tensors has it loaded already). No pytest, no transformers.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from types import SimpleNamespace
from typing import Any

from pytest_tokenguard.static.chat_template import pick_template
from pytest_tokenguard.static.checks import STATIC_CODES, Report, StaticCode, StaticFinding
from pytest_tokenguard.static.layout import TokenLayout, is_id, valid_ids
from pytest_tokenguard.static.objects import (
    base_model,
    chat_template_of,
    embedding_rows,
    layout_from_objects,
    text_config,
    tokenizer_end_of_turn,
    unwrap_tokenizer,
)

#: label value the loss ignores (``CrossEntropyLoss(ignore_index=-100)``, what collators write)
IGNORE_INDEX = -100
#: what ``purpose`` may be (None: "train" when the batch has labels, else "generate")
PURPOSES = ("train", "generate")
#: how many rows, positions per row and ids a finding lists
LISTED = 5
#: tokens after the last stop id that may still be whitespace (ChatML ends a turn with ``<|im_end|>\n``)
_TRAILER = 3

#: the TG3xx codes (defined with every other static code in ``checks.STATIC_CODES``)
SEQUENCE_CODES: dict[str, StaticCode] = {code: c for code, c in STATIC_CODES.items() if code.startswith("TG3")}

#: the parts of one token field, ``<prefix><role>`` (trl pads its preference batches by these suffixes,
#: ``DPODataCollatorWithPadding``; ``completion_mask`` is what trl's DPO / KTO collators emit instead of labels)
FIELD_ROLES = ("input_ids", "attention_mask", "labels", "completion_mask")
#: TG303's hint when the masked eos / end-of-turn positions are not padding: the loss mask leaves them out
LOSS_MASK_HINT = (
    "the loss mask leaves the end of turn out: put it inside {% generation %}...{% endgeneration %} in the chat "
    "template (trl's assistant_only_loss=True trains only those blocks), or train with assistant_only_loss=False; "
    "for completion-only loss, end every completion with eos"
)
#: config attributes (top level, text_config, vision_config, audio_config) naming a placeholder id that a processor
#: expands into media features (transformers' configuration_*.py; image_patch_id through attribute_map)
PLACEHOLDER_ATTRIBUTE = re.compile(
    r"^(?:image|video|audio|img_context|video_context|sound_context|audio_latent|audio_prompt|document)_token_(?:id|index)$"
    r"|^image_patch_id$"
)
#: processor / tokenizer attributes holding placeholder ids (lists, ids, then token strings)
_PROCESSOR_ID_LISTS = ("image_token_ids", "video_token_ids", "audio_token_ids")
_NAMED_PLACEHOLDERS = ("image", "video", "audio")
#: added special tokens spelled like a media placeholder: a tokenizer that declares no placeholder by name (the
#: Idefics/LLaVA ``<image>``, Qwen2-VL ``<|image_pad|>``, Gemma-3 ``<image_soft_token>``, Llama-4 ``<|image|>``,
#: InternVL ``<IMG_CONTEXT>``)
PLACEHOLDER_SPELLINGS = frozenset(
    {
        "<image>",
        "<video>",
        "<audio>",
        "<|image_pad|>",
        "<|video_pad|>",
        "<|audio_pad|>",
        "<image_soft_token>",
        "<|image|>",
        "<IMG_CONTEXT>",
    }
)


def _finding(code: str, severity: str, offenders: _Offenders, message: str, hint: str | None = None) -> StaticFinding:
    """A batch finding: ``field`` is ``"batch"``; ``values`` holds ``rows`` (row indices, up to 5), ``positions``
    (per listed row, its offending positions, up to 5) and ``ids`` (distinct ids at those positions, up to 5)."""
    values = {"rows": offenders.rows, "positions": offenders.positions, "ids": offenders.ids}
    return StaticFinding(code, severity, "batch", values, message, hint or SEQUENCE_CODES[code].hint)


class _BatchReport(Report):
    """A :class:`Report` whose ``layout`` is read from the model and tokenizer on first use.

    The checks need a handful of ids, the layout (the table) much more: reading it lazily keeps a check
    of a clean batch to the cost of the checks. Copying or pickling gives a plain :class:`Report`.
    """

    def __init__(self, model: Any, tokenizer: Any, findings: list[StaticFinding]) -> None:
        self._sources: tuple[Any, Any] | None = (model, tokenizer)
        self._layout: TokenLayout | None = None
        self.findings = findings

    @property
    def layout(self) -> TokenLayout:
        if self._layout is None:
            model, tokenizer = self._sources or (None, None)
            self._layout = _batch_layout(model, tokenizer)
            self._sources = None
        return self._layout

    @layout.setter
    def layout(self, value: TokenLayout) -> None:
        self._layout, self._sources = value, None

    def __reduce__(self) -> tuple[Any, ...]:
        return (Report, (self.layout, self.findings))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Report):
            return NotImplemented
        return (self.layout, self.findings) == (other.layout, other.findings)


def _batch_layout(model: Any = None, tokenizer: Any = None) -> TokenLayout:
    """The layout a batch report shows: ``layout_from_objects(model, tokenizer)`` with a model, else the
    tokenizer part alone (``model``, ``generation`` and the vocab size stay None), else an empty layout."""
    if model is not None:
        return layout_from_objects(model, tokenizer)
    if tokenizer is None:
        return TokenLayout()
    layout = layout_from_objects(SimpleNamespace(), tokenizer)  # an empty config: only the tokenizer part is read
    layout.model = None
    return layout


# --- facts from the model and tokenizer ---------------------------------------------------------------


@dataclass(frozen=True)
class _Facts:
    """The ids the checks compare against, and the names messages give them."""

    bos: int | None
    eos: tuple[int, ...]
    end_of_turn: int | None
    pad: int | None
    unk: int | None
    #: ids must be below this (embedding rows, else config vocab size, else tokenizer length)
    limit: int | None
    limit_text: str
    encoder_decoder: bool
    tokenizer: Any
    #: the model was trained with a bos the tokenizer declares (TG311): tokenizer bos == config bos, no stop id,
    #: not the pad, no ``add_bos_token=False`` of the tokenizer's own, not a turn marker the template writes
    bos_expected: bool = False
    #: media placeholder ids a processor expands, each with where it was learned from (TG310)
    placeholders: tuple[tuple[int, str], ...] = ()

    @property
    def stops(self) -> tuple[int, ...]:
        """eos ids and the chat end of turn: where an answer ends."""
        if self.end_of_turn is None or self.end_of_turn in self.eos:
            return self.eos
        return (*self.eos, self.end_of_turn)


def _id(value: Any) -> int | None:
    return int(value) if is_id(value) else None


def _embedding_rows(model: Any) -> int | None:
    return _positive(embedding_rows(model))


def _positive(value: Any) -> int | None:
    return int(value) if is_id(value) and value > 0 else None


def _tokenizer_length(tokenizer: Any) -> int | None:
    """Highest id the tokenizer can produce + 1 (added tokens may sit past ``len(tokenizer)``)."""
    try:
        length = len(tokenizer)
        getter = getattr(tokenizer, "get_added_vocab", None)
        added = getter() if callable(getter) else {}
        return max([length, *(int(i) + 1 for i in added.values() if is_id(i))])
    except Exception:  # a stand-in without __len__ or added vocabulary
        return None


def _config_placeholders(top: Any, found: dict[int, str]) -> None:
    """Placeholder ids of the config and its text / vision / audio sub-configs (both ``_token_id`` and
    ``_token_index`` spellings, and attribute_map aliases)."""
    configs: list[tuple[str, Any]] = [("config", top)]
    for sub in ("text_config", "vision_config", "audio_config"):
        nested = getattr(top, sub, None)
        if nested is not None and not isinstance(nested, (dict, str)):
            configs.append((f"config.{sub}", nested))
    for where, config in configs:
        try:
            names = set(vars(config)) | set(getattr(type(config), "attribute_map", None) or {})
        except TypeError:  # an object without __dict__
            continue
        for name in sorted(n for n in names if PLACEHOLDER_ATTRIBUTE.match(n)):
            try:
                value = getattr(config, name, None)
            except Exception:  # a property that cannot be read on this config
                continue
            for token_id in valid_ids(value):
                found.setdefault(int(token_id), f"{where}.{name}")


def _named_placeholders(owner: Any, whose: str, tokenizer: Any, found: dict[int, str]) -> None:
    """``image_token_ids`` (processors), ``image_token_id`` and the ``image_token`` string (processors, and v5
    tokenizers' named extra special tokens), for images, videos and audio."""

    def read(name: str) -> Any:
        try:
            return getattr(owner, name, None)
        except Exception:  # transformers' __getattr__ raises on some unknown names
            return None

    for name in _PROCESSOR_ID_LISTS:
        value = read(name)
        if isinstance(value, (list, tuple)):
            for token_id in valid_ids(list(value)):
                found.setdefault(int(token_id), f"{whose}.{name}")
    for kind in _NAMED_PLACEHOLDERS:
        for token_id in valid_ids(read(f"{kind}_token_id")):
            found.setdefault(int(token_id), f"{whose}.{kind}_token_id")
        text = read(f"{kind}_token")
        convert = getattr(tokenizer, "convert_tokens_to_ids", None)
        if isinstance(text, str) and callable(convert):
            try:
                token_id = convert(text)
            except Exception:  # a string the tokenizer cannot map
                continue
            if is_id(token_id) and token_id != getattr(tokenizer, "unk_token_id", None):
                found.setdefault(int(token_id), f"{whose}.{kind}_token {text!r}")


def _spelled_placeholders(tokenizer: Any, found: dict[int, str]) -> None:
    decoder = getattr(tokenizer, "added_tokens_decoder", None)
    if not isinstance(decoder, dict):
        return
    for token_id, token in decoder.items():
        text = getattr(token, "content", token)
        if is_id(token_id) and text in PLACEHOLDER_SPELLINGS and getattr(token, "special", True) is not False:
            found.setdefault(int(token_id), "the tokenizer: an added special token spelled like a media placeholder")


def placeholder_ids(model: Any = None, tokenizer: Any = None) -> dict[int, str]:
    """Media placeholder ids a processor expands into image / video / audio features -> where each was learned
    from, in this order: the model config (top level, ``text_config``, ``vision_config``, ``audio_config``;
    ``image_token_id`` / ``image_token_index`` and the rarer ``img_context_token_id``, ...), the processor
    (``image_token_ids``, ``image_token_id``, ``image_token``) when ``tokenizer`` is one, the tokenizer's named
    tokens (``tokenizer.image_token_id``), and added special tokens spelled like a placeholder (``<image>``,
    ``<|image_pad|>``, ...: :data:`PLACEHOLDER_SPELLINGS`). ``model``: a model, peft model or config."""
    found: dict[int, str] = {}
    if model is not None:
        model = base_model(model)
        _config_placeholders(model.config if hasattr(model, "config") else model, found)
    inner = unwrap_tokenizer(tokenizer)
    if tokenizer is not None and inner is not tokenizer:
        _named_placeholders(tokenizer, "processor", inner, found)
    if inner is not None:
        _named_placeholders(inner, "tokenizer", inner, found)
        _spelled_placeholders(inner, found)
    return found


def _literal_in_template(processor: Any, text: str) -> bool:
    """Whether the chat template writes ``text`` literally (SmolLM2's bos ``<|im_start|>`` opens every turn)."""
    template = chat_template_of(processor)
    templates = template.values() if isinstance(template, dict) else [template]
    return any(isinstance(t, str) and text in t for t in templates) or text in (pick_template(template) or "")


def _bos_expected(facts: _Facts, config: Any, processor: Any) -> bool:
    """TG311 applies: the tokenizer declares the model config's bos, which is no stop id and not the pad; the
    tokenizer does not opt out (``add_bos_token=False`` in its own settings, as Phi-3's) and the chat template
    does not write the bos string itself as a turn marker."""
    tokenizer, bos = facts.tokenizer, facts.bos
    if tokenizer is None or bos is None or config is None or facts.encoder_decoder:
        return False
    if _id(getattr(config, "bos_token_id", None)) != bos or bos in facts.stops or bos == facts.pad:
        return False
    init_kwargs = getattr(tokenizer, "init_kwargs", None)
    if isinstance(init_kwargs, dict) and init_kwargs.get("add_bos_token") is False:
        return False
    text = getattr(tokenizer, "bos_token", None)
    return not (isinstance(text, str) and _literal_in_template(processor, text))


def _facts(model: Any, tokenizer: Any, processor: Any = None) -> _Facts:
    eos: list[int] = []
    bos: int | None = None
    pad: int | None = None
    unk: int | None = None
    eot: int | None = None
    limit: int | None = None
    limit_text = ""
    encoder_decoder = False
    config: Any = None
    if tokenizer is not None:
        bos, pad, unk = (_id(getattr(tokenizer, f"{name}_token_id", None)) for name in ("bos", "pad", "unk"))
        eos.extend(valid_ids(getattr(tokenizer, "eos_token_id", None)))
        turn, _ = tokenizer_end_of_turn(tokenizer)
        eot = _id(turn[1]) if turn is not None else None
    if model is not None:
        model = base_model(model)
        is_model = hasattr(model, "config")
        top = model.config if is_model else model
        config = text_config(top)
        encoder_decoder = getattr(top, "is_encoder_decoder", False) is True
        eos.extend(v for v in valid_ids(getattr(config, "eos_token_id", None)) if v not in eos)
        rows = _embedding_rows(model) if is_model else None
        vocab = _positive(getattr(config, "vocab_size", None))
        if rows is not None:
            limit, limit_text = rows, f"the model's {rows} embedding rows"
        elif vocab is not None:
            limit, limit_text = vocab, f"the config's vocab size {vocab}"
        if tokenizer is None:  # the config's own ids stand in for the tokenizer's
            bos, pad = _id(getattr(config, "bos_token_id", None)), _id(getattr(config, "pad_token_id", None))
    if limit is None and tokenizer is not None:
        length = _tokenizer_length(tokenizer)
        if length is not None:
            limit, limit_text = length, f"the tokenizer's {length} ids"
    facts = _Facts(bos, tuple(eos), eot, pad, unk, limit, limit_text, encoder_decoder, tokenizer)
    known = {*facts.stops, bos, pad, unk}
    placeholders = tuple((i, where) for i, where in placeholder_ids(model, processor or tokenizer).items() if i not in known)
    expected = _bos_expected(facts, config, processor or tokenizer)
    if placeholders or expected:
        facts = replace(facts, bos_expected=expected, placeholders=placeholders)
    return facts


class _Names:
    """``128000 '<|begin_of_text|>'``: ids with their token strings, as far as the tokenizer knows them."""

    def __init__(self, facts: _Facts) -> None:
        self.facts = facts
        self._cache: dict[int, str] = {}

    def __call__(self, value: int) -> str:
        text = self._cache.get(value)
        if text is None:
            token = None
            tokenizer, limit = self.facts.tokenizer, self.facts.limit
            if tokenizer is not None and value >= 0 and (limit is None or value < limit):
                try:
                    token = tokenizer.convert_ids_to_tokens(value)
                except Exception:  # an id the tokenizer cannot map
                    token = None
            text = self._cache[value] = f"{value} {token!r}" if isinstance(token, str) else str(value)
        return text

    def role(self, value: int) -> str:
        facts = self.facts
        if value in facts.eos:
            name = "eos"
        elif value == facts.end_of_turn:
            name = "end of turn"
        elif value == facts.bos:
            name = "bos"
        elif value == facts.pad:
            name = "pad"
        else:
            name = "id"
        return f"{name} {self(value)}"

    def roles(self, values: Sequence[int]) -> str:
        return " / ".join(self.role(v) for v in values)

    def stops(self) -> str:
        return self.roles(self.facts.stops)

    def text(self, values: Sequence[int]) -> str:
        decode = getattr(self.facts.tokenizer, "decode", None)
        if not callable(decode):
            return ""
        try:
            return str(decode(list(values)))
        except Exception:  # decoding is for the message only
            return ""


# --- arrays -------------------------------------------------------------------------------------------


class _NumpyOps:
    """The few operations whose spelling differs between numpy and torch (the rest are operators)."""

    def __init__(self) -> None:
        import numpy

        self.np = numpy

    def arange(self, n: int) -> Any:
        return self.np.arange(n)

    def where(self, condition: Any, a: Any, b: Any) -> Any:
        return self.np.where(condition, a, b)

    def rowmin(self, x: Any) -> Any:
        return x.min(1)

    def rowmax(self, x: Any) -> Any:
        return x.max(1)

    def ones(self, rows: int, width: int) -> Any:
        return self.np.ones((rows, width), dtype=bool)

    def vector(self, values: list[int]) -> Any:
        return self.np.asarray(values)

    def nonzero(self, x: Any) -> list[int]:
        """Indices of the true entries of a 1-D mask."""
        result: list[int] = self.np.flatnonzero(x).tolist()
        return result

    def integral(self, x: Any, *, allow_bool: bool) -> bool:
        return x.dtype.kind in ("iub" if allow_bool else "iu")


class _TorchOps:
    _INTEGRAL = ("int8", "int16", "int32", "int64", "uint8")

    def __init__(self, torch: Any) -> None:
        self.torch = torch

    def arange(self, n: int) -> Any:
        return self.torch.arange(n)

    def where(self, condition: Any, a: Any, b: Any) -> Any:
        return self.torch.where(condition, a, b)

    def rowmin(self, x: Any) -> Any:
        return x.amin(1)

    def rowmax(self, x: Any) -> Any:
        return x.amax(1)

    def ones(self, rows: int, width: int) -> Any:
        return self.torch.ones((rows, width), dtype=self.torch.bool)

    def vector(self, values: list[int]) -> Any:
        return self.torch.tensor(values)

    def nonzero(self, x: Any) -> list[int]:
        result: list[int] = x.nonzero().flatten().tolist()
        return result

    def integral(self, x: Any, *, allow_bool: bool) -> bool:
        name = str(x.dtype).removeprefix("torch.")
        return name in self._INTEGRAL or (allow_bool and name == "bool")


_Ops = _NumpyOps | _TorchOps


def _tensor_module(value: Any) -> Any:
    """torch, when ``value`` is a torch tensor (torch is then imported already: nothing is imported here)."""
    torch = sys.modules.get("torch")
    return torch if torch is not None and isinstance(value, torch.Tensor) else None


def _numpy_rows(value: Any, max_rows: int | None) -> tuple[Any, list[int] | None] | None:
    """(rows x positions) numpy array (a view where ``value`` is an array) and, for ragged lists, each row's
    length (the array is then filled with 0 past a row's end). None when ``value`` is not a 1-D/2-D array."""
    import numpy as np

    if isinstance(value, (list, tuple)) and value and all(isinstance(row, (list, tuple)) for row in value):
        rows = value[:max_rows] if max_rows is not None else value
        lengths = [len(row) for row in rows]
        if len(set(lengths)) > 1:  # ragged: one pass to pad, the lengths keep what is real
            arrays = [np.asarray(row) for row in rows]
            kinds = [a.dtype for a in arrays if a.size]
            if not kinds:
                return None
            array = np.zeros((len(rows), max(lengths)), dtype=np.result_type(*kinds))
            for index, row in enumerate(arrays):
                array[index, : row.size] = row
            return array, lengths
        array = np.asarray(rows)
    else:
        array = np.asarray(value)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2:
        return None
    return (array[:max_rows] if max_rows is not None else array), None


def _rows(value: Any, ops: _Ops, max_rows: int | None) -> tuple[Any, list[int] | None] | None:
    """``value`` as a (rows x positions) array of ``ops``' kind: tensors stay tensors (moved to the CPU
    once, when elsewhere), anything else goes through numpy once. None when it is not usable."""
    try:
        torch = _tensor_module(value)
        if isinstance(ops, _TorchOps):
            if torch is not None:
                tensor = value.detach()
                if tensor.layout != torch.strided:
                    return None
                if tensor.dim() == 1:
                    tensor = tensor.unsqueeze(0)
                if tensor.dim() != 2:
                    return None
                if max_rows is not None:
                    tensor = tensor[:max_rows]
                if tensor.device.type != "cpu":
                    tensor = tensor.cpu()  # the one copy of this input
                return tensor, None
            converted = _numpy_rows(value, max_rows)
            if converted is None:
                return None
            array, lengths = converted
            if not array.flags.writeable:
                array = array.copy()
            return ops.torch.from_numpy(array), lengths
        if torch is not None:  # a tensor among numpy inputs: once to numpy
            value = value.detach().cpu().numpy()
        return _numpy_rows(value, max_rows)
    except Exception:  # odd shapes, dtypes or objects: the check that needs this input is skipped
        return None


@dataclass
class _Batch:
    ops: _Ops
    ids: Any
    #: the rows' own lengths when ragged lists were padded with 0; None: every row fills the width
    lengths: list[int] | None
    #: the attention mask as given (bool), None when absent
    mask: Any
    #: an attention mask was given but is not usable (wrong shape or dtype)
    mask_unusable: bool
    labels: Any
    labels_given: bool
    #: what the rows are: "sequence" (prompt and answer), "completion" (a preference / prompt-completion field whose
    #: rows end in a completion: ``completion_mask``, or a chosen / rejected / completion prefix), "prompt"
    kind: str = "sequence"


def field_kind(prefix: str, has_completion_mask: bool = False) -> str:
    """What the rows of the token field ``<prefix>input_ids`` are: ``"prompt"`` (a prefix starting with
    ``prompt``: prompts alone, as trl's ORPO / CPO and older DPO batches keep them), ``"completion"`` (the field
    has a ``completion_mask``, or its prefix names chosen / rejected / completion rows: each row ends where a
    completion ends), else ``"sequence"``."""
    lowered = prefix.lower()
    if lowered.startswith("prompt"):
        return "prompt"
    if has_completion_mask or any(word in lowered for word in ("chosen", "rejected", "completion")):
        return "completion"
    return "sequence"


def _read(batch: Mapping[str, Any], max_rows: int | None, prefix: str = "") -> _Batch | None:
    ids_value = batch.get(prefix + "input_ids")
    if ids_value is None:
        return None
    torch = _tensor_module(ids_value)
    try:
        ops: _Ops = _TorchOps(torch) if torch is not None else _NumpyOps()
    except ImportError:
        return None
    read = _rows(ids_value, ops, max_rows)
    if read is None:
        return None
    ids, lengths = read
    if ids.shape[0] == 0 or ids.shape[1] == 0 or not ops.integral(ids, allow_bool=False):
        return None

    def companion(name: str, allow_bool: bool) -> tuple[Any, bool]:
        value = batch.get(prefix + name)
        if value is None:
            return None, False
        other = _rows(value, ops, max_rows)
        if other is None or tuple(other[0].shape) != tuple(ids.shape) or other[1] != lengths:
            return None, True
        if not ops.integral(other[0], allow_bool=allow_bool):
            return None, True
        return other[0], True

    mask, mask_given = companion("attention_mask", True)
    if mask is not None:
        mask = mask != 0
    labels, labels_given = companion("labels", False)
    completion, completion_given = companion("completion_mask", True)
    if not labels_given and completion is not None:
        # trl's DPO / KTO loss: labels are the ids with the prompt and padding (completion_mask 0) set to -100
        labels, labels_given = ops.where(completion != 0, ids, IGNORE_INDEX), True
    kind = field_kind(prefix, completion_given)
    return _Batch(ops, ids, lengths, mask, mask_given and mask is None, labels, labels_given, kind)


# --- the checks ---------------------------------------------------------------------------------------


@dataclass
class _Offenders:
    """The offending rows of one check: how many, and the first few with their positions and values."""

    total: int
    rows: list[int]
    positions: list[list[int]]
    ids: list[int]
    #: per listed row, how many offending positions it has
    counts: list[int]


class _Checker:
    """The TG3xx checks over one batch. Arrays are (rows x positions) or per row (rows,)."""

    def __init__(self, data: _Batch, facts: _Facts) -> None:
        self.data, self.facts, self.ops = data, facts, data.ops
        self.names = _Names(facts)
        ops = self.ops
        self.height, self.width = int(data.ids.shape[0]), int(data.ids.shape[1])
        self.pos = ops.arange(self.width)
        self.row_index = ops.arange(self.height)
        present = None
        #: each row's last position (its own length - 1 for ragged lists)
        self.row_end: Any = self.width - 1
        if data.lengths is not None:
            lengths = ops.vector(data.lengths)
            present = self.pos[None, :] < lengths[:, None]
            self.row_end = lengths - 1
        #: positions the rows really have (None: all; ragged lists are filled past a row's end)
        self.present = present
        #: attended (real) positions: the attention mask, or inferred from the pad id
        if data.mask is None:
            self.att = self._inferred(present)
        else:
            self.att = data.mask if present is None else data.mask & present
        self.first = ops.rowmin(ops.where(self.att, self.pos, self.width))
        self.last = ops.rowmax(ops.where(self.att, self.pos, -1))
        self.has = self.last >= 0
        self._stop_hits: Any = None

    def _inferred(self, present: Any) -> Any:
        """No attention mask: pad-id runs at a row's edges are padding when the pad id is not also a bos or
        stop id; everything else is real."""
        ops, pad = self.ops, self.facts.pad
        if pad is None or pad == self.facts.bos or pad in self.facts.stops:
            return ops.ones(self.height, self.width) if present is None else present
        content = self.data.ids != pad
        if present is not None:
            content = content & present
        start = ops.rowmin(ops.where(content, self.pos, self.width))
        stop = ops.rowmax(ops.where(content, self.pos, -1))
        return (self.pos[None, :] >= start[:, None]) & (self.pos[None, :] <= stop[:, None])

    @staticmethod
    def _isin(x: Any, values: Sequence[int]) -> Any:
        result = x == values[0]
        for value in values[1:]:
            result = result | (x == value)
        return result

    def stop_hits(self) -> Any:
        """Real positions holding an eos / end-of-turn id (after the first token, when bos is a stop id too)."""
        if self._stop_hits is None:
            hits = self._isin(self.data.ids, self.facts.stops) & self.att
            if self.facts.bos in self.facts.stops:  # GPT-2: a leading <|endoftext|> is the bos, not an end
                hits = hits & (self.pos[None, :] > self.first[:, None])
            self._stop_hits = hits
        return self._stop_hits

    def _offenders(self, rows: list[int], where: Callable[[int], list[int]], source: Any = None) -> _Offenders:
        """``rows``: every offending row, in order; ``where(row)``: its offending positions; ``source``: the
        array whose values are listed (default ``input_ids``)."""
        source = self.data.ids if source is None else source
        listed = rows[:LISTED]
        positions: list[list[int]] = []
        counts: list[int] = []
        found: list[int] = []
        for row in listed:
            at = where(row)
            counts.append(len(at))
            positions.append(at[:LISTED])
            for value in source[row][at[:LISTED]].tolist():
                if value not in found:
                    found.append(int(value))
        return _Offenders(len(rows), listed, positions, found[:LISTED], counts)

    def _hits(self, hits: Any) -> Callable[[int], list[int]]:
        return lambda row: self.ops.nonzero(hits[row])

    def _at(self, vector: Any) -> Callable[[int], list[int]]:
        return lambda row: [int(vector[row])]

    @staticmethod
    def _rows_text(o: _Offenders) -> str:
        if o.total == 1:
            return f"row {o.rows[0]}"
        more = o.total - len(o.rows)
        return f"rows {o.rows}" + (f" (+{more} more)" if more else "")

    @staticmethod
    def _where(o: _Offenders, extra: Mapping[int, str] | None = None) -> str:
        parts = []
        for row, positions, count in zip(o.rows, o.positions, o.counts, strict=True):
            if count == 1:
                text = f"row {row} at position {positions[0]}"
            elif count > len(positions):
                text = f"row {row} at {count} positions [{', '.join(map(str, positions))}, ...]"
            else:
                text = f"row {row} at positions {positions}"
            parts.append(text + (extra or {}).get(row, ""))
        return "; ".join(parts)

    @staticmethod
    def _verb(o: _Offenders, singular: str, plural: str) -> str:
        return singular if o.total == 1 else plural

    # TG301
    def doubled_bos(self) -> StaticFinding | None:
        bos = self.facts.bos
        if bos is None or self.width < 2:
            return None
        hits = (self.data.ids == bos) & self.att & (self.att.cumsum(1) <= 2)  # bos among the first two real tokens
        bad = hits.sum(1) == 2
        if not bool(bad.any()):
            return None
        o = self._offenders(self.ops.nonzero(bad), self._hits(hits))
        return _finding(
            "TG301",
            "error",
            o,
            f"{self._rows_text(o)} {self._verb(o, 'starts', 'start')} with bos {self.names(bos)} twice ({self._where(o)})",
        )

    # TG302
    def prompt_ends_in_stop(self) -> StaticFinding | None:
        stops = self.facts.stops
        if not stops or self.facts.encoder_decoder:
            return None
        ops, ids = self.ops, self.data.ids
        last = ops.where(self.has, self.last, 0)
        last_ids = ids[self.row_index, last]
        exact = self.has & self._isin(last_ids, stops)
        opening = self.facts.bos in stops  # GPT-2: a prompt of <|endoftext|> alone is a bos, for unconditional generation
        if opening:
            exact = exact & (self.last != self.first)
        #: row -> (position of the stop id, the whitespace after it): ChatML/Gemma/Zephyr end turns with "\n"
        trailing: dict[int, tuple[int, str]] = {}
        if self.facts.tokenizer is not None and self.width > 1:
            back = self.last[:, None] - ops.arange(_TRAILER + 1)[None, 1:]  # the real tokens before the last
            inside = back >= 0
            back = ops.where(inside, back, 0)
            tail = ids[self.row_index[:, None], back]
            tail_real = self.att[self.row_index[:, None], back] & inside
            near = self._isin(tail, stops) & tail_real
            candidates = self.has & ~exact & near.any(1)
            if bool(candidates.any()):
                decoded: dict[tuple[int, ...], str] = {}
                rows = ops.nonzero(candidates)
                columns = (tail[candidates].tolist(), tail_real[candidates].tolist(), near[candidates].tolist())
                for row, before, real, is_stop, final in zip(rows, *columns, last_ids[candidates].tolist(), strict=True):
                    offset = is_stop.index(True)  # the stop sits offset + 1 before the last real token
                    at = int(self.last[row]) - offset - 1
                    if not all(real[:offset]) or (opening and at == int(self.first[row])):
                        continue
                    after = (*reversed(before[:offset]), final)
                    if after not in decoded:
                        decoded[after] = self.names.text(after)
                    text = decoded[after]
                    if text and not text.strip():
                        trailing[row] = (at, text)
        if not trailing and not bool(exact.any()):
            return None
        rows = sorted({*ops.nonzero(exact), *trailing})
        o = self._offenders(rows, lambda row: [trailing[row][0]] if row in trailing else [int(self.last[row])])
        extra = {row: f", then {text!r}" for row, (_, text) in trailing.items()}
        return _finding(
            "TG302",
            "error",
            o,
            f"{self._rows_text(o)} {self._verb(o, 'ends', 'end')} in {self.names.roles(o.ids)} ({self._where(o, extra)}): "
            "generation starts after the end of a sequence",
        )

    # TG303
    def stops_masked(self) -> StaticFinding | None:
        labels, stops = self.data.labels, self.facts.stops
        if labels is None or not stops:
            return None
        hits = self.stop_hits()
        count = int(hits.sum())
        if count == 0 or bool((hits & (labels != IGNORE_INDEX)).any()):
            return None
        o = self._offenders(self.ops.nonzero(hits.any(1)), self._hits(hits))
        which = "the only eos / end-of-turn position" if count == 1 else f"all {count} eos / end-of-turn positions"
        # the cause: the pad id is a stop id (a collator that masks by the pad id masks eos too), or else the loss
        # mask (assistant-only loss, {% generation %} blocks, completion masks) leaves the end of turn out
        by_pad = self.facts.pad is not None and self.facts.pad in stops
        cause = "" if by_pad else ", left out by the loss mask (the pad is no stop id)"
        return _finding(
            "TG303",
            "error",
            o,
            f"{which} of the batch ({self.names.roles(o.ids)}) {'is' if count == 1 else 'are'} -100 in labels "
            f"({self._where(o)}){cause}: the model is never trained to stop",
            None if by_pad else LOSS_MASK_HINT,
        )

    # TG304
    def rows_without_stop(self) -> StaticFinding | None:
        if not self.facts.stops:
            return None
        ended = self.stop_hits().any(1)
        missing = self.has & ~ended
        if not bool(missing.any()):
            return None
        real_rows = int(self.has.sum())
        o = self._offenders(self.ops.nonzero(missing), self._at(self.last))
        some = bool((self.has & ended).any())
        consequence = "cut off (max_length truncation?)" if some else "the model never sees where an answer ends"
        ids = self.data.ids
        extra = {row: f" ({self.names(int(ids[row, at]))})" for row, (at,) in zip(o.rows, o.positions, strict=True)}
        return _finding(
            "TG304",
            "warning" if some else "error",
            o,
            f"{self._rows_text(o)} ({o.total} of {real_rows} rows) {self._verb(o, 'has', 'have')} no "
            f"{self.names.stops()} before padding; last real token: {self._where(o, extra)}: {consequence}",
        )

    # TG305
    def padding_inside(self) -> StaticFinding | None:
        if self.data.mask is None:
            return None
        holes = self.has & (self.last - self.first + 1 != self.att.sum(1))
        if not bool(holes.any()):
            return None
        pos = self.pos[None, :]
        hits = ~self.att & (pos > self.first[:, None]) & (pos < self.last[:, None])
        o = self._offenders(self.ops.nonzero(holes), self._hits(hits))
        return _finding(
            "TG305",
            "error",
            o,
            f"{self._rows_text(o)} {self._verb(o, 'has', 'have')} padding inside the sequence, attention 0 between "
            f"attended tokens ({self._where(o)}), holding {self.names.roles(o.ids)}",
        )

    # TG306
    def pad_attended(self) -> StaticFinding | None:
        facts, pad = self.facts, self.facts.pad
        if self.data.mask is None or pad is None or pad in (facts.bos, facts.unk) or pad in facts.stops:
            return None
        hits = self.att & (self.data.ids == pad)
        bad = hits.any(1)
        if not bool(bad.any()):
            return None
        o = self._offenders(self.ops.nonzero(bad), self._hits(hits))
        return _finding(
            "TG306",
            "warning",
            o,
            f"{self._rows_text(o)} {self._verb(o, 'attends', 'attend')} to pad {self.names(pad)} as content "
            f"({self._where(o)}): the attention mask does not mark it as padding",
        )

    # TG307
    def out_of_range(self) -> StaticFinding | None:
        limit = self.facts.limit
        if limit is None:
            return None
        ids, labels, ops = self.data.ids, self.data.labels, self.ops
        parts: list[str] = []
        found: list[_Offenders] = []
        if int(ids.min()) < 0 or int(ids.max()) >= limit:
            hits = (ids < 0) | (ids >= limit)
            o = self._offenders(ops.nonzero(hits.any(1)), self._hits(hits))
            found.append(o)
            parts.append(f"input_ids hold {o.ids} outside [0, {limit}) ({self._where(o)})")
        if labels is not None:
            hits = (labels != IGNORE_INDEX) & ((labels < 0) | (labels >= limit))
            if bool(hits.any()):
                o = self._offenders(ops.nonzero(hits.any(1)), self._hits(hits), labels)
                found.append(o)
                parts.append(f"labels hold {o.ids}, neither -100 nor in [0, {limit}) ({self._where(o)})")
        if not found:
            return None
        merged = found[0] if len(found) == 1 else _merge(*found)
        return _finding("TG307", "error", merged, "; ".join(parts) + f": ids must be below {self.facts.limit_text}")

    # TG308
    def right_padding(self) -> StaticFinding | None:
        if self.facts.encoder_decoder:
            return None
        right = self.has & (self.last < self.row_end)
        if not bool(right.any()):
            return None
        pos = self.pos[None, :]
        row_end = self.row_end[:, None] if self.data.lengths is not None else self.row_end
        hits = (pos > self.last[:, None]) & (pos <= row_end)
        o = self._offenders(self.ops.nonzero(right), self._hits(hits))
        return _finding(
            "TG308",
            "error",
            o,
            f"{self._rows_text(o)} {self._verb(o, 'is', 'are')} right-padded, attention 0 after the last attended token "
            f"({self._where(o)}): decoder-only generate() appends new tokens after the padding",
        )

    # TG309
    def labels_on_padding(self) -> StaticFinding | None:
        labels, mask = self.data.labels, self.data.mask
        if labels is None or mask is None:
            return None
        padded = ~mask if self.present is None else ~mask & self.present
        hits = padded & (labels != IGNORE_INDEX)
        bad = hits.any(1)
        if not bool(bad.any()):
            return None
        o = self._offenders(self.ops.nonzero(bad), self._hits(hits), labels)
        return _finding(
            "TG309",
            "error",
            o,
            f"{self._rows_text(o)} {self._verb(o, 'has', 'have')} labels on padded positions, attention_mask 0 "
            f"({self._where(o)}), holding {', '.join(self.names(v) for v in o.ids)} instead of -100: the loss trains "
            "the model on padding",
        )

    # TG310
    def placeholder_labels(self) -> StaticFinding | None:
        labels, placeholders = self.data.labels, self.facts.placeholders
        if labels is None or not placeholders:
            return None
        ids = [token_id for token_id, _ in placeholders]
        hits = self._isin(labels, ids)
        if self.present is not None:
            hits = hits & self.present
        bad = hits.any(1)
        if not bool(bad.any()):
            return None
        o = self._offenders(self.ops.nonzero(bad), self._hits(hits), labels)
        where = dict(placeholders)
        named = "; ".join(f"{self.names(v)}, learned from {where[v]}" for v in o.ids)
        return _finding(
            "TG310",
            "error",
            o,
            f"labels hold the media placeholder {named} ({self._where(o)}): a processor expands the placeholder into "
            "image / video / audio features, so as a label it trains the model to emit the placeholder",
        )

    # TG311
    def missing_bos(self) -> StaticFinding | None:
        bos = self.facts.bos
        if not self.facts.bos_expected or bos is None:
            return None
        first = self.ops.where(self.has, self.first, 0)
        without = self.has & (self.data.ids[self.row_index, first] != bos)
        if not bool(without.any()):
            return None
        o = self._offenders(self.ops.nonzero(without), self._at(first))
        real_rows = int(self.has.sum())
        every = o.total == real_rows
        ids = self.data.ids
        extra = {row: f" ({self.names(int(ids[row, at]))})" for row, (at,) in zip(o.rows, o.positions, strict=True)}
        return _finding(
            "TG311",
            "error" if every else "warning",
            o,
            f"{self._rows_text(o)} ({o.total} of {real_rows} rows) {self._verb(o, 'starts', 'start')} without bos "
            f"{self.names(bos)}, which the tokenizer declares and the model config names as its bos; first real token: "
            f"{self._where(o, extra)}: the model was trained with sequences that start with bos",
        )

    # TG312
    def completion_ends(self) -> StaticFinding | None:
        """Each completion row must end in exactly one stop id (whitespace may follow it, as ChatML's "\n")."""
        stops = self.facts.stops
        if self.data.kind != "completion" or not stops or self.facts.encoder_decoder:
            return None
        ops, ids = self.ops, self.data.ids
        last = ops.where(self.has, self.last, 0)
        hits = self.stop_hits()
        ends = self.has & hits[self.row_index, last]
        back = self.last[:, None] - ops.arange(_TRAILER + 2)[None, 1:]  # the real tokens before the last
        inside = back >= self.first[:, None]
        back = ops.where(inside, back, 0)
        near = hits[self.row_index[:, None], back] & inside
        doubled = ends & near[:, 0]  # eos eos
        #: row -> positions of the two stops, for eos <whitespace> eos (whitespace may follow the second one too)
        spaced: dict[int, list[int]] = {}
        #: rows that end in a stop followed by whitespace only
        closed: set[int] = set()
        candidates = self.has & near.any(1) & ~doubled
        if self.facts.tokenizer is not None and bool(candidates.any()):
            decoded: dict[tuple[int, ...], str] = {}

            def blank(values: tuple[int, ...]) -> bool:
                if not values:
                    return True
                if values not in decoded:
                    decoded[values] = self.names.text(values)
                return bool(decoded[values]) and not decoded[values].strip()

            rows = ops.nonzero(candidates)
            tails = ids[self.row_index[:, None], back][candidates].tolist()
            columns = (
                tails,
                near[candidates].tolist(),
                ends[candidates].tolist(),
                ids[self.row_index, last][candidates].tolist(),
            )
            for row, tail, is_stop, ended, final in zip(rows, *columns, strict=True):
                # window index i is position last - 1 - i; the final stop is the last token (-1) or the nearest stop
                # before it with only whitespace after it
                at = -1
                if not ended:
                    at = is_stop.index(True)
                    if not blank((*reversed(tail[:at]), final)):
                        continue
                    closed.add(row)
                before = [i for i in range(at + 1, len(is_stop)) if is_stop[i]]
                if before and blank(tuple(reversed(tail[at + 1 : before[0]]))):
                    spaced[row] = [int(self.last[row]) - 1 - before[0], int(self.last[row]) - 1 - at]
        missing = self.has & ~ends
        missing_rows = [row for row in ops.nonzero(missing) if row not in closed]
        doubled_rows = sorted({*ops.nonzero(doubled), *spaced})
        parts: list[str] = []
        found: list[_Offenders] = []
        if doubled_rows:
            o = self._offenders(doubled_rows, lambda row: spaced.get(row) or [int(self.last[row]) - 1, int(self.last[row])])
            found.append(o)
            gap = {
                row: f" ({self.names.text(ids[row, at[0] + 1 : at[1]].tolist())!r} between)"
                for row, at in spaced.items()
                if at[1] - at[0] > 1
            }
            parts.append(
                f"{self._rows_text(o)} {self._verb(o, 'ends', 'end')} the completion with {self.names.roles(o.ids)} twice "
                f"({self._where(o, gap)}): the model is trained to emit an end after the end"
            )
        if missing_rows:
            o = self._offenders(missing_rows, self._at(self.last))
            found.append(o)
            extra = {row: f" ({self.names(int(ids[row, at]))})" for row, (at,) in zip(o.rows, o.positions, strict=True)}
            parts.append(
                f"{self._rows_text(o)} {self._verb(o, 'ends', 'end')} the completion without {self.names.stops()}; "
                f"last real token: {self._where(o, extra)}: the model is not trained to stop after it"
            )
        if not found:
            return None
        merged = found[0] if len(found) == 1 else _merge(*found)
        return _finding("TG312", "error", merged, "; ".join(parts))


def _merge(a: _Offenders, b: _Offenders) -> _Offenders:
    """Offending rows of input_ids and labels together (first few rows, their positions, both kinds of ids)."""
    by_row: dict[int, tuple[set[int], int]] = {}
    for o in (a, b):
        for row, positions, count in zip(o.rows, o.positions, o.counts, strict=True):
            known, total = by_row.get(row, (set(), 0))
            by_row[row] = (known | set(positions), total + count)
    rows = sorted(by_row)[:LISTED]
    ids = list(dict.fromkeys([*a.ids, *b.ids]))[:LISTED]
    return _Offenders(
        max(a.total, b.total, len(by_row)),
        rows,
        [sorted(by_row[row][0])[:LISTED] for row in rows],
        ids,
        [by_row[row][1] for row in rows],
    )


def check_batch(
    batch: Mapping[str, Any],
    tokenizer: Any = None,
    model: Any = None,
    *,
    purpose: str | None = None,
    max_rows: int | None = None,
    prefix: str = "",
) -> Report:
    """Check the special tokens of one batch of token ids (TG301-TG312), as it reaches training or ``generate()``.

    ``batch``: a mapping (``dict``, the ``BatchEncoding`` a tokenizer or collator returns) with ``input_ids``
    of shape (batch, sequence) -- a torch tensor, numpy array or list of lists (ragged lists: each row as
    long as it is); a 1-D sequence is one row -- and optionally ``attention_mask`` (1 = real token) and
    ``labels`` (-100 = ignored) of the same shape. Without an attention mask, runs of the pad id at a row's
    edges count as padding when the pad id is not also a bos or eos id; otherwise every token is real.

    ``tokenizer``: a tokenizer or a processor carrying one; gives bos/eos/pad/unk (``<name>_token_id``), the
    chat end of turn (rendered from ``chat_template``) and token strings for messages. ``model``: a model or
    peft model (or a config); gives more eos ids (``config.eos_token_id``, an int or a list), the embedding
    rows (``get_input_embeddings()``; else ``config.vocab_size``) and ``is_encoder_decoder``. Without a model,
    ids are checked against the tokenizer's length; without a tokenizer, bos and pad come from the model
    config. Either may be None: a check whose ids are unknown is skipped.

    ``purpose``: ``"train"`` (TG303 masked stops, TG304 rows without a stop, TG309 labels on padding, TG310
    placeholder labels), ``"generate"`` (TG302 prompt ends in a stop id -- an eos id or the end of turn, also
    when only whitespace such as ChatML's ``"\n"`` follows it -- and TG308 right padding; both skipped for
    encoder-decoder models), or None: ``"train"`` when the batch has ``labels`` (or a ``completion_mask``), else
    ``"generate"``. TG301, TG305, TG306, TG307 and TG311 (rows that start without the bos the tokenizer declares
    and the model config names, left padding skipped) run for both. ``max_rows``: check only the first
    ``max_rows`` rows.

    TG303's hint follows its cause: the pad id is a stop id (a collator masking by the pad id), or the loss mask
    (assistant-only loss, ``{% generation %}`` blocks, completion masks) leaves the end of turn out.

    ``prefix``: check the token field ``<prefix>input_ids`` with ``<prefix>attention_mask``, ``<prefix>labels``
    and ``<prefix>completion_mask`` (trl's ``chosen_``, ``rejected_``, ``prompt_``, ``KL_`` fields; see
    :func:`token_fields`). Without labels, a ``completion_mask`` gives them as trl's DPO / KTO losses do: the ids,
    -100 where the mask is 0. A field with a completion mask, or whose prefix names chosen / rejected /
    completion rows, ends in a completion: TG312 (a doubled eos, also with whitespace between, or no eos at the
    completion's end) replaces TG304 there. A ``prompt*`` field holds prompts: the label and end checks are
    skipped.

    Returns a :class:`Report`: at most one :class:`StaticFinding` per code, in code order, with
    ``field="batch"`` and ``values={"rows", "positions", "ids"}`` (up to 5 rows, 5 positions per row, 5 ids;
    rows and positions count from 0; TG309 / TG310 list label values). ``report.layout`` is
    ``layout_from_objects(model, tokenizer)`` (the
    tokenizer part alone without a model), read from the objects when first used.

    Work is vectorised over the whole batch. CPU tensors are read in place (no copy); a tensor on another
    device is copied to the CPU once; lists are converted to numpy once. Inputs that cannot be read give no
    finding for the checks that need them, never an exception: no usable ``input_ids`` (missing, not 1-D/2-D,
    not integers, empty) gives an empty report; an attention mask of another shape or dtype leaves only
    TG307; labels that do not match leave out TG303 and the labels part of TG307. Raises ``TypeError`` when
    ``batch`` is not a mapping, ``ValueError`` for an unknown ``purpose``, a ``max_rows`` that is not an
    int >= 0, or a batch without ``input_ids`` whose token fields all carry a prefix (``chosen_input_ids`` ...:
    use :func:`check_fields`, or ``prefix=``).
    """
    if not isinstance(batch, Mapping):
        raise TypeError(
            "check_batch() takes a mapping with 'input_ids' (and optionally 'attention_mask', 'labels'), such as the "
            f"dict or BatchEncoding a tokenizer or data collator returns; got {type(batch).__name__}"
        )
    if purpose is not None and purpose not in PURPOSES:
        raise ValueError(f"purpose must be 'train', 'generate' or None, not {purpose!r}")
    if max_rows is not None and (not is_id(max_rows) or max_rows < 0):
        raise ValueError(f"max_rows must be None or an int >= 0, not {max_rows!r}")
    if not prefix and "input_ids" not in batch:
        prefixed = list(token_fields(batch))
        if prefixed:  # a trl preference batch: checking nothing would read as clean
            raise ValueError(
                f"check_batch() found no 'input_ids' but the token fields {[p + 'input_ids' for p in prefixed]}: check "
                "them all with check_fields(batch, tokenizer, model), or one with check_batch(batch, ..., "
                f"prefix={prefixed[0]!r})"
            )
    processor, tokenizer = tokenizer, unwrap_tokenizer(tokenizer)
    report = _BatchReport(model, tokenizer, [])
    data = _read(batch, max_rows, prefix)
    if data is not None:
        report.findings = _check(data, _facts(model, tokenizer, processor), purpose)
    return report


def _check(data: _Batch, facts: _Facts, purpose: str | None) -> list[StaticFinding]:
    purpose = purpose or ("train" if data.labels_given else "generate")
    checker = _Checker(data, facts)
    checks: list[Callable[[], StaticFinding | None]]
    if data.mask_unusable:  # every check but the id range needs to know which tokens are real
        checks = [checker.out_of_range]
    elif data.kind == "prompt":  # prompts alone: neither labels nor an end to check
        checks = [checker.doubled_bos, checker.padding_inside, checker.pad_attended, checker.out_of_range, checker.missing_bos]
    else:
        checks = [checker.doubled_bos]
        if purpose == "generate":
            checks.append(checker.prompt_ends_in_stop)
        else:
            checks.append(checker.stops_masked)
            if data.kind != "completion":  # a completion's end is TG312's
                checks.append(checker.rows_without_stop)
        checks += [checker.padding_inside, checker.pad_attended, checker.out_of_range]
        if purpose == "generate":
            checks.append(checker.right_padding)
        else:
            checks += [checker.labels_on_padding, checker.placeholder_labels]
        checks.append(checker.missing_bos)
        if purpose != "generate":
            checks.append(checker.completion_ends)
    return [finding for finding in (check() for check in checks) if finding is not None]


def _is_token_array(value: Any) -> bool:
    """A 2-D integer array (torch tensor, numpy array) or a list of integer lists: what a token field holds."""
    shape = getattr(value, "shape", None)
    if shape is not None:
        dtype = str(getattr(value, "dtype", "")).removeprefix("torch.")
        return len(shape) == 2 and (dtype.startswith(("int", "uint")) or dtype in ("long", "short"))
    return (
        isinstance(value, (list, tuple))
        and bool(value)
        and all(isinstance(row, (list, tuple)) and all(is_id(v) for v in row) for row in value)
    )


def token_fields(batch: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """The token fields of a batch: prefix -> {role: key}. A field is any key ``input_ids`` or
    ``<prefix>input_ids`` holding a 2-D integer array (or a list of integer lists), with its companions
    ``<prefix>attention_mask``, ``<prefix>labels`` and ``<prefix>completion_mask`` where present (the suffixes
    trl pads by). The plain field (prefix ``""``) comes first, then the others in key order. A 1-D ``label``
    (KTO's desirable / undesirable flag) is no token field."""
    fields: dict[str, dict[str, str]] = {}
    for key in sorted(k for k in batch if isinstance(k, str) and k.endswith("input_ids")):
        prefix = key[: -len("input_ids")]
        if not _is_token_array(batch[key]):
            continue
        fields[prefix] = {role: prefix + role for role in FIELD_ROLES if prefix + role in batch}
    return dict(sorted(fields.items(), key=lambda item: (item[0] != "", item[0])))


def check_fields(
    batch: Mapping[str, Any],
    tokenizer: Any = None,
    model: Any = None,
    *,
    purpose: str | None = "train",
    max_rows: int | None = None,
) -> dict[str, Report]:
    """:func:`check_batch` on every token field of ``batch`` (:func:`token_fields`): prefix -> its report. The
    ids to look for are read from ``model`` and ``tokenizer`` once for all fields. ``purpose`` defaults to
    ``"train"``, for the batches that reach ``Trainer.training_step``; ``prompt*`` fields are checked as
    prompts, fields ending in completions get TG312 (see :func:`check_batch`)."""
    if not isinstance(batch, Mapping):
        raise TypeError(f"check_fields() takes a mapping of token fields, not {type(batch).__name__}")
    if purpose is not None and purpose not in PURPOSES:
        raise ValueError(f"purpose must be 'train', 'generate' or None, not {purpose!r}")
    if max_rows is not None and (not is_id(max_rows) or max_rows < 0):
        raise ValueError(f"max_rows must be None or an int >= 0, not {max_rows!r}")
    processor, tokenizer = tokenizer, unwrap_tokenizer(tokenizer)
    facts: _Facts | None = None
    reports: dict[str, Report] = {}
    for prefix in token_fields(batch):
        report = reports[prefix] = _BatchReport(model, tokenizer, [])
        data = _read(batch, max_rows, prefix)
        if data is None:
            continue
        if facts is None:
            facts = _facts(model, tokenizer, processor)
        report.findings = _check(data, facts, purpose)
    return reports
