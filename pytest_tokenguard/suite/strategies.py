"""Hypothesis strategies for special-token layouts, and a builder that makes them real objects.

``special_token_layouts()`` draws plain layouts — consistent and inconsistent ones: ``None``,
eos lists, duplicates, ids shared between tokens, ids out of range, negative ids, tokenizers
longer than the embedding matrix, a chat template whose end-of-turn token may or may not stop
generation. ``build_layout(layout)`` turns one into a tiny offline Llama model, a tokenizer and
the model's generation config in a few milliseconds.

    from hypothesis import given
    from pytest_tokenguard.suite.strategies import special_token_layouts, build_layout

    @given(special_token_layouts())
    def test_my_training_setup(layout):
        model, tokenizer, generation_config = build_layout(layout)
        ...

Requires hypothesis (``pip install pytest-tokenguard[test]``); transformers/torch are imported by
``build_layout`` only.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from pytest_tokenguard.static.layout import FIELDS

#: Layout keys: "rows" (embedding rows = config vocab size), "tokenizer" {"length", "bos", "eos",
#: "pad", "end_of_turn"} (ids or None), "model" {"bos", "eos", "pad"}, "generation" (same, or None).
Layout = dict[str, Any]

TEMPLATE = (
    "{% for message in messages %}{{ '<|turn|>' + message['role'] + '\\n' + message['content'] + '{end_of_turn}' + '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|turn|>assistant\\n' }}{% endif %}"
)


def token_string(token_id: int) -> str:
    return f"<|t{token_id}|>"


@st.composite
def special_token_layouts(draw: st.DrawFn, *, min_rows: int = 12, max_rows: int = 40, allow_out_of_range: bool = True) -> Layout:
    """A random special-token layout over a small vocabulary (ids drawn from a few shared values
    so that tokens collide often)."""
    rows = draw(st.integers(min_rows, max_rows))
    longer = allow_out_of_range and draw(st.integers(0, 9)) == 0  # sometimes more tokens than rows
    length = draw(st.integers(rows + 1, rows + 4)) if longer else draw(st.integers(8, rows))
    pool = draw(st.lists(st.integers(0, length - 1), min_size=2, max_size=4, unique=True))
    tokenizer_id = st.none() | st.sampled_from(pool)
    tokenizer = {name: draw(tokenizer_id) for name in FIELDS}
    tokenizer["length"] = length
    tokenizer["end_of_turn"] = draw(st.none() | st.sampled_from(pool))

    bad = [rows, rows + 3, -1] if allow_out_of_range else []
    config_id = st.none() | st.sampled_from(pool + bad) if bad else st.none() | st.sampled_from(pool)
    eos_list = st.lists(st.sampled_from(pool + bad), min_size=1, max_size=3)  # duplicates allowed

    def ids() -> dict[str, Any]:
        return {"bos": draw(config_id), "eos": draw(config_id | eos_list), "pad": draw(config_id)}

    model = ids()
    generation = draw(st.sampled_from(["same", "own", "none"]))
    return {
        "rows": rows,
        "tokenizer": tokenizer,
        "model": model,
        "generation": None if generation == "none" else dict(model) if generation == "same" else ids(),
    }


def build_layout(layout: Layout, *, seed: int = 0) -> tuple[Any, Any, Any]:
    """``(model, tokenizer, generation_config)`` for a drawn layout; generation_config may be None."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

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
    if tok.get("end_of_turn") is not None:
        tokenizer.chat_template = TEMPLATE.replace("{end_of_turn}", token_string(tok["end_of_turn"]))

    model_ids = layout["model"]
    config = LlamaConfig(
        vocab_size=layout["rows"],
        hidden_size=8,
        intermediate_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=4,
        max_position_embeddings=64,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    for name in FIELDS:  # set after construction: out-of-range ids are the point
        setattr(model.config, f"{name}_token_id", model_ids[name])
    generation: Any = None
    if layout["generation"] is not None:
        generation = GenerationConfig()  # type: ignore[no-untyped-call]
        for name in FIELDS:
            setattr(generation, f"{name}_token_id", layout["generation"][name])
    model.generation_config = generation
    return model, tokenizer, generation
