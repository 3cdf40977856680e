"""Hypothesis strategies for special-token layouts, and a builder that makes them real objects.

``special_token_layouts()`` draws plain layouts — consistent and inconsistent ones: ``None``,
eos lists, duplicates, ids shared between tokens, ids out of range, negative ids, tokenizers
longer than the embedding matrix, a chat template whose end-of-turn token may or may not stop
generation. ``build_layout(layout)`` turns one into a tiny offline Llama model, a tokenizer and
the model's generation config in a few milliseconds.

``special_token_layouts(kinds=KINDS)`` (or ``checkpoint_layouts()``) also draws the other shapes checkpoints
ship in: a peft LoRA adapter over the base (``adapter``: LoRA only, or carrying its own embedding rows),
T5/BART encoder-decoders (``encoder_decoder``, with ``decoder_start_token_id``) and a multimodal model whose
tokenizer sits inside a processor with a content-parts chat template (``processor``). ``build_layout`` builds
all of them; ``train_adapter`` makes the adapter of an ``adapter`` layout.

    from hypothesis import given
    from pytest_tokenguard.suite.strategies import special_token_layouts, build_layout

    @given(special_token_layouts())
    def test_my_training_setup(layout):
        model, tokenizer, generation_config = build_layout(layout)
        ...

Requires hypothesis (``pip install pytest-tokenguard[test]``); transformers/torch are imported by
``build_layout`` only (peft by ``train_adapter`` only).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from pytest_tokenguard.static.layout import FIELDS

#: Layout keys: "kind" (one of KINDS), "rows" (embedding rows = config vocab size), "tokenizer" {"length", "bos",
#: "eos", "pad", "end_of_turn"} (ids or None), "model" {"bos", "eos", "pad"}, "generation" (same, or None);
#: "adapter" (kind "adapter", see ``adapter_options``), "architecture" and "decoder_start" (kind
#: "encoder_decoder": ``{"model": id, "generation": id}``, ids or None), "processor" (kind "processor":
#: ``{"tokenizer_end_of_turn": id or None}``, the end of turn of the inner tokenizer's own string-content
#: template, None: it has none; the processor's parts template ends turns with ``tokenizer["end_of_turn"]``).
Layout = dict[str, Any]

#: The kinds of checkpoint ``special_token_layouts(kinds=...)`` draws from: a plain causal LM (Llama), a peft
#: LoRA adapter over that base, a T5/BART encoder-decoder, a multimodal model (Qwen2-Audio) with a processor.
KINDS = ("causal", "adapter", "encoder_decoder", "processor")
#: How an adapter's embeddings are saved: not at all (LoRA on attention only), whole matrices
#: (``save_embedding_layers=True``, ``modules_to_save=["embed_tokens", "lm_head"]``), LoRA factors on the
#: embeddings (their shape carries the rows), trainable-token deltas (``trainable_token_indices``: no rows).
ADAPTER_EMBEDDINGS = ("lora_only", "save_embedding_layers", "modules_to_save", "lora_embeddings", "trainable_tokens")
#: Encoder-decoder architectures ``build_layout`` makes for kind "encoder_decoder".
ENCODER_DECODERS = ("t5", "bart")

TEMPLATE = (
    "{% for message in messages %}{{ '<|turn|>' + message['role'] + '\\n' + message['content'] + '{end_of_turn}' + '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|turn|>assistant\\n' }}{% endif %}"
)
#: A processor's template (Qwen2-VL / Idefics3 style): message content is a list of parts, only text parts render.
PARTS_TEMPLATE = (
    "{% for message in messages %}{{ '<|turn|>' + message['role'] + '\\n' }}{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{{ '{end_of_turn}' + '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|turn|>assistant\\n' }}{% endif %}"
)


def token_string(token_id: int) -> str:
    return f"<|t{token_id}|>"


def added_token_string(index: int) -> str:
    """The ``index``-th token an adapter's training added to the tokenizer."""
    return f"<|new{index}|>"


@st.composite
def special_token_layouts(
    draw: st.DrawFn,
    *,
    min_rows: int = 12,
    max_rows: int = 40,
    allow_out_of_range: bool = True,
    kinds: Sequence[str] = ("causal",),
    adapter_embeddings: Sequence[str] = ADAPTER_EMBEDDINGS,
) -> Layout:
    """A random special-token layout over a small vocabulary (ids drawn from a few shared values
    so that tokens collide often).

    ``rows`` (embedding rows) is in ``[min_rows, max_rows]``; the tokenizer has 8 to ``rows`` tokens, or (with
    ``allow_out_of_range``, one draw in ten) 1 to 4 more than ``rows``. ``kinds``: which of :data:`KINDS` to draw
    (default: plain causal LMs only, the draws of earlier versions); ``adapter_embeddings``: how drawn adapters save
    their embeddings (a selection of :data:`ADAPTER_EMBEDDINGS`, see :func:`adapter_options`).
    """
    unknown = [kind for kind in kinds if kind not in KINDS]
    if unknown or not kinds:
        raise ValueError(f"kinds must be a non-empty selection of {KINDS}, got {list(kinds)!r}")
    rows = draw(st.integers(min_rows, max_rows))
    longer = allow_out_of_range and draw(st.integers(0, 9)) == 0  # sometimes more tokens than rows
    length = draw(st.integers(rows + 1, rows + 4)) if longer else draw(st.integers(8, rows))
    pool = draw(st.lists(st.integers(0, length - 1), min_size=2, max_size=4, unique=True))
    tokenizer_id = st.none() | st.sampled_from(pool)
    tokenizer: dict[str, Any] = {name: draw(tokenizer_id) for name in FIELDS}
    tokenizer["length"] = length
    tokenizer["end_of_turn"] = draw(st.none() | st.sampled_from(pool))

    bad = [rows, rows + 3, -1] if allow_out_of_range else []
    config_id = st.none() | st.sampled_from(pool + bad) if bad else st.none() | st.sampled_from(pool)
    eos_list = st.lists(st.sampled_from(pool + bad), min_size=1, max_size=3)  # duplicates allowed

    def ids() -> dict[str, Any]:
        return {"bos": draw(config_id), "eos": draw(config_id | eos_list), "pad": draw(config_id)}

    model = ids()
    generation = draw(st.sampled_from(["same", "own", "none"]))
    layout: Layout = {
        "kind": draw(st.sampled_from(list(kinds))) if tuple(kinds) != ("causal",) else "causal",
        "rows": rows,
        "tokenizer": tokenizer,
        "model": model,
        "generation": None if generation == "none" else dict(model) if generation == "same" else ids(),
    }
    if layout["kind"] == "adapter":
        layout["adapter"] = draw(adapter_options(rows=rows, length=length, embeddings=adapter_embeddings))
    elif layout["kind"] == "encoder_decoder":
        layout["architecture"] = draw(st.sampled_from(ENCODER_DECODERS))
        start = st.none() | st.sampled_from(pool)
        layout["decoder_start"] = {
            "model": draw(start),
            "generation": draw(start) if layout["generation"] is not None else None,
        }
    elif layout["kind"] == "processor":
        # the processor's template ends turns with tokenizer["end_of_turn"]; the tokenizer inside may have its own
        # (an id that is already one of the tokenizer's special tokens: the template's string is a token)
        specials = sorted({tokenizer[name] for name in (*FIELDS, "end_of_turn") if tokenizer[name] is not None})
        own = st.none() | st.sampled_from(specials) if specials else st.none()
        layout["processor"] = {"tokenizer_end_of_turn": draw(own)}
    return layout


def checkpoint_layouts(**options: Any) -> st.SearchStrategy[Layout]:
    """``special_token_layouts(kinds=KINDS, **options)``: every kind of checkpoint, each about as often."""
    return special_token_layouts(kinds=KINDS, **options)


@st.composite
def adapter_options(draw: st.DrawFn, *, rows: int, length: int, embeddings: Sequence[str] = ADAPTER_EMBEDDINGS) -> dict[str, Any]:
    """How a LoRA adapter was trained over a base of ``rows`` embedding rows and a tokenizer of ``length`` tokens.

    Keys: ``embeddings`` (one of ``embeddings``, default :data:`ADAPTER_EMBEDDINGS`); ``added`` (0 to 3 special
    tokens added to the tokenizer before training); ``rows`` (the embedding rows training used: the base's, or
    ``len(tokenizer)`` after the additions, rounded up to a multiple of 1 or 8 by ``resize_token_embeddings``;
    always the base's for ``trainable_tokens``, which cannot resize); ``trainable`` (token ids of
    ``trainable_token_indices``, below both ``rows`` and ``length``); ``tokenizer_beside`` (the training tokenizer
    is saved in the adapter folder; else the base folder's tokenizer is the one used); ``base_resized`` (the base
    folder was saved after resizing to the adapter's rows, the fix TG210 suggests)."""
    kind = draw(st.sampled_from(list(embeddings)))
    added = 0 if kind == "trainable_tokens" else draw(st.integers(0, 3))
    trained_rows = rows
    if kind != "trainable_tokens" and draw(st.integers(0, 3)) > 0:  # most adapters that add tokens resize
        multiple = draw(st.sampled_from([1, 8]))
        trained_rows = -(-(length + added) // multiple) * multiple
    below = min(rows, length)
    trainable = (
        draw(st.lists(st.integers(0, below - 1), min_size=1, max_size=2, unique=True)) if kind == "trainable_tokens" else []
    )
    return {
        "embeddings": kind,
        "added": added,
        "rows": trained_rows,
        "trainable": sorted(trainable),
        "tokenizer_beside": draw(st.booleans()),
        "base_resized": draw(st.integers(0, 3)) == 0,
    }


def _tokenizer(layout: Layout) -> Any:
    from pytest_tokenguard.suite.zoo import build_tokenizer

    tok = layout["tokenizer"]
    specials: dict[int, str] = {}
    for name in (*FIELDS, "end_of_turn"):
        if tok.get(name) is not None:
            specials[tok[name]] = token_string(tok[name])
    spec: dict[str, Any] = {"length": tok["length"]}
    for name in (*FIELDS, "end_of_turn"):
        spec[name] = [specials[tok[name]], tok[name]] if tok.get(name) is not None else None
    tokenizer = build_tokenizer(spec)
    processor = layout.get("kind") == "processor"
    end = layout.get("processor", {}).get("tokenizer_end_of_turn") if processor else tok.get("end_of_turn")
    if end is not None:
        tokenizer.chat_template = TEMPLATE.replace("{end_of_turn}", token_string(end))
    return tokenizer


def _model(layout: Layout) -> Any:
    import transformers

    kind, rows = layout.get("kind", "causal"), layout["rows"]
    if kind == "encoder_decoder":
        if layout["architecture"] == "t5":
            t5 = transformers.T5Config(vocab_size=rows, d_model=8, d_kv=4, d_ff=16, num_layers=1, num_heads=2)
            return transformers.T5ForConditionalGeneration(t5)
        bart = transformers.BartConfig(
            vocab_size=rows,
            d_model=8,
            encoder_layers=1,
            decoder_layers=1,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=16,
            decoder_ffn_dim=16,
            max_position_embeddings=64,
        )
        return transformers.BartForConditionalGeneration(bart)
    if kind == "processor":  # a composite config: the language model's ids sit in its text_config
        config = transformers.Qwen2AudioConfig(
            audio_config={
                "model_type": "qwen2_audio_encoder",
                "d_model": 8,
                "encoder_layers": 1,
                "encoder_attention_heads": 2,
                "encoder_ffn_dim": 16,
                "num_mel_bins": 8,
                "max_source_positions": 16,
            },
            text_config={
                "model_type": "qwen2",
                "vocab_size": rows,
                "hidden_size": 8,
                "intermediate_size": 16,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "num_key_value_heads": 1,
                "max_position_embeddings": 64,
            },
        )
        return transformers.Qwen2AudioForConditionalGeneration(config)
    llama = transformers.LlamaConfig(
        vocab_size=rows,
        hidden_size=8,
        intermediate_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=4,
        max_position_embeddings=64,
    )
    return transformers.LlamaForCausalLM(llama)


def build_layout(layout: Layout, *, seed: int = 0) -> tuple[Any, Any, Any]:
    """``(model, tokenizer, generation_config)`` for a drawn layout; generation_config may be None.

    Kind ``causal`` and ``adapter`` (the base; :func:`train_adapter` makes the adapter): a Llama causal LM;
    ``encoder_decoder``: a T5 or BART conditional-generation model, with ``decoder_start_token_id`` set in its
    config and generation config; ``processor``: a Qwen2-Audio model (ids in its ``text_config``) and, in
    place of the tokenizer, a ``Qwen2AudioProcessor`` carrying it, whose own chat template takes content parts.
    Ids are set after construction (out-of-range ones are the point). Hidden sizes of 8, one layer.
    """
    import torch
    from transformers import GenerationConfig

    kind = layout.get("kind", "causal")
    tokenizer = _tokenizer(layout)
    torch.manual_seed(seed)
    model = _model(layout)
    config = model.config.get_text_config() if kind == "processor" else model.config
    for name in FIELDS:  # set after construction: out-of-range ids are the point
        setattr(config, f"{name}_token_id", layout["model"][name])
    generation: Any = None
    if layout["generation"] is not None:
        generation = GenerationConfig()  # type: ignore[no-untyped-call]
        for name in FIELDS:
            setattr(generation, f"{name}_token_id", layout["generation"][name])
    if kind == "encoder_decoder":
        model.config.decoder_start_token_id = layout["decoder_start"]["model"]
        if generation is not None:
            generation.decoder_start_token_id = layout["decoder_start"]["generation"]
    model.generation_config = generation
    if kind == "processor":
        tokenizer = _processor(layout, tokenizer)
    return model, tokenizer, generation


def _processor(layout: Layout, tokenizer: Any) -> Any:
    from transformers import Qwen2AudioProcessor, WhisperFeatureExtractor

    end = layout["tokenizer"].get("end_of_turn")
    template = PARTS_TEMPLATE.replace("{end_of_turn}", token_string(end)) if end is not None else None
    features = WhisperFeatureExtractor()  # type: ignore[no-untyped-call]
    return Qwen2AudioProcessor(feature_extractor=features, tokenizer=tokenizer, chat_template=template)  # type: ignore[no-untyped-call]


@dataclass
class Adapter:
    """What training an ``adapter`` layout left: the peft model to save (``save_pretrained(folder, **save)``),
    the tokenizer it was trained with, and the rows a base needs to load it (None: any base, nothing carried)."""

    peft_model: Any
    tokenizer: Any
    save: dict[str, Any]
    carried_rows: int | None


def train_adapter(layout: Layout, base: Any, tokenizer: Any) -> Adapter:
    """The adapter of an ``adapter`` layout over ``base`` (left untouched: a copy is trained) and ``tokenizer``
    (copied, then ``layout["adapter"]["added"]`` special tokens added): LoRA r=2 on ``q_proj``, plus the
    embeddings as ``layout["adapter"]["embeddings"]`` says, the copy resized to ``layout["adapter"]["rows"]``."""
    import peft

    options = layout["adapter"]
    model, trained = copy.deepcopy(base), copy.deepcopy(tokenizer)
    if options["added"]:
        trained.add_tokens([added_token_string(i) for i in range(options["added"])], special_tokens=True)
    if options["rows"] != layout["rows"]:
        model.resize_token_embeddings(options["rows"], mean_resizing=False)
    kind = options["embeddings"]
    lora: dict[str, Any] = {"r": 2, "target_modules": ["q_proj"], "task_type": "CAUSAL_LM"}
    save: dict[str, Any] = {"save_embedding_layers": False}
    carried: int | None = options["rows"]
    if kind == "save_embedding_layers":
        save = {"save_embedding_layers": True}
    elif kind == "modules_to_save":
        lora["modules_to_save"] = ["embed_tokens", "lm_head"]
    elif kind == "lora_embeddings":
        lora["target_modules"] = ["q_proj", "embed_tokens", "lm_head"]
    else:
        carried = None
        if kind == "trainable_tokens":
            lora["trainable_token_indices"] = list(options["trainable"])
    return Adapter(peft.get_peft_model(model, peft.LoraConfig(**lora)), trained, save, carried)
