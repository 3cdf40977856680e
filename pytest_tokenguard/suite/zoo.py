"""Tiny offline models carrying the exact special-token layouts of real model families.

Every model is built in code (no hub access): real architecture class, real config vocab size
and special ids, a tokenizer with the exact special strings at their exact ids and the exact
length, the family's generation config and chat template. Hidden size 16, one layer.
transformers and torch are imported only when a model is built.
"""

from __future__ import annotations

import copy
import functools
import json
import json.encoder
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from pytest_tokenguard.static.layout import NAMED_SPECIALS

_DATA = "_data/token_layouts.json"
_SOURCE_TREE_DATA = Path(__file__).resolve().parents[2] / "fixtures" / "token_layouts.json"

# Simplified copies of each family's template: same turn markers, same end-of-turn token.
CHAT_TEMPLATES = {
    "chatml": (
        "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
        "'<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    ),
    "mistral-inst": (
        "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
        "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
        "{{ ' ' + message['content'] + eos_token }}{% endif %}{% endfor %}"
    ),
    "gemma": (
        "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'assistant' %}{% set role = 'model' %}"
        "{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\n' + "
        "message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
    ),
    "phi3": (
        "{% for message in messages %}{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
    ),
    "zephyr": (
        "{% for message in messages %}{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token + '\n' }}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
    ),
}

# Turn markers that are special tokens in the real tokenizer but not named in the layout data.
TEMPLATE_SPECIALS: dict[str, dict[int, str]] = {
    "mistral-inst": {3: "[INST]", 4: "[/INST]"},
    "gemma": {106: "<start_of_turn>", 107: "<end_of_turn>"},
    "phi3": {32001: "<|assistant|>", 32006: "<|system|>", 32007: "<|end|>", 32010: "<|user|>"},
}

#: Used where the installed transformers predates the family's class (Qwen3 arrived in 4.51).
ARCHITECTURE_FALLBACKS = {"Qwen3ForCausalLM": "Qwen2ForCausalLM"}

_ARCHITECTURE_OPTIONS: dict[str, dict[str, Any]] = {
    "Qwen3ForCausalLM": {"head_dim": 8},
    "Qwen2ForCausalLM": {},
    "LlamaForCausalLM": {"head_dim": 8},
    "MistralForCausalLM": {"head_dim": 8},
    "Gemma2ForCausalLM": {"head_dim": 8},
    "Phi3ForCausalLM": {},
    "GPT2LMHeadModel": {},
}


@functools.cache
def layouts() -> dict[str, dict[str, Any]]:
    """The layout data: the copy inside the wheel, or fixtures/ in a source checkout."""
    packaged = resources.files("pytest_tokenguard").joinpath(_DATA)
    if packaged.is_file():
        text = packaged.read_text(encoding="utf-8")
    else:
        text = _SOURCE_TREE_DATA.read_text(encoding="utf-8")
    data: dict[str, dict[str, Any]] = json.loads(text)
    return data


def layout(name: str) -> dict[str, Any]:
    try:
        return copy.deepcopy(layouts()[name])
    except KeyError:
        raise KeyError(f"unknown family {name!r}; known: {', '.join(sorted(layouts()))}") from None


def _special_tokens(tok: dict[str, Any]) -> dict[int, str]:
    specials: dict[int, str] = {}
    for key in (*NAMED_SPECIALS, "end_of_turn"):
        value = tok.get(key)
        if value:
            text, token_id = value
            if specials.get(token_id, text) != text:
                raise ValueError(f"layout gives id {token_id} two strings: {specials[token_id]!r}, {text!r}")
            specials[token_id] = text
    for token_id, text in TEMPLATE_SPECIALS.get(tok.get("chat_template") or "", {}).items():
        if token_id < int(tok["length"]):
            specials.setdefault(token_id, text)
    return specials


@functools.cache
def _byte_alphabet() -> tuple[str, ...]:
    from tokenizers import pre_tokenizers

    return tuple(sorted(pre_tokenizers.ByteLevel.alphabet()))


def tokenizer_json(tok: dict[str, Any]) -> str:
    """``tokenizer.json`` text of a byte-level BPE tokenizer (no merges) of exactly ``tok['length']`` tokens:
    the byte alphabet, then unique fillers, with the special tokens at their exact ids."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    length = int(tok["length"])
    specials = _special_tokens(tok)
    alphabet = _byte_alphabet()
    # The backend is built through the API with a one-entry vocab (so the JSON schema is the installed
    # tokenizers' own); the real vocab is spliced in as text. Building a 256k-entry vocab through Python
    # objects costs more than everything else together.
    backend = Tokenizer(models.BPE(vocab={alphabet[0]: 0}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([AddedToken(text, special=True, normalized=False) for text in specials.values()])
    data = json.loads(backend.to_str())
    for entry in data["added_tokens"]:
        entry["id"] = next(i for i, text in specials.items() if text == entry["content"])
    data["model"]["vocab"] = "@VOCAB@"
    encode = json.encoder.encode_basestring  # C-accelerated string escaping
    # the alphabet fills the first ids that are not special, in order; placeholders the rest
    plain = [i for i in range(min(length, len(alphabet) + len(specials))) if i not in specials][: len(alphabet)]
    entries = [f"{encode(char)}:{i}" for char, i in zip(alphabet, plain, strict=False)]
    start = plain[-1] + 1 if plain else 0
    entries += [f'"<|tg_filler_{i}|>":{i}' for i in range(start, length) if i not in specials]
    entries += [f"{encode(text)}:{i}" for i, text in specials.items()]
    return json.dumps(data).replace('"@VOCAB@"', "{" + ",".join(entries) + "}", 1)


def tokenizer_from_json(text: str, tok: dict[str, Any]) -> Any:
    """A transformers fast tokenizer from ``tokenizer_json`` text, with the family's special tokens and template."""
    from transformers import PreTrainedTokenizerFast

    # From a file: passing a tokenizer object makes transformers deep-copy it, which costs as much again.
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "tokenizer.json"
        path.write_text(text, encoding="utf-8")
        tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
            tokenizer_file=str(path),
            bos_token=_text_of(tok, "bos"),
            eos_token=_text_of(tok, "eos"),
            pad_token=_text_of(tok, "pad"),
            unk_token=_text_of(tok, "unk"),
            padding_side="left",
        )
    template = CHAT_TEMPLATES.get(tok.get("chat_template") or "")
    if template is not None:
        tokenizer.chat_template = template
    return tokenizer


def build_tokenizer(tok: dict[str, Any]) -> Any:
    """A byte-level BPE tokenizer (no merges) of exactly ``tok['length']`` tokens, specials at their ids."""
    return tokenizer_from_json(tokenizer_json(tok), tok)


def _text_of(tok: dict[str, Any], key: str) -> str | None:
    value = tok.get(key)
    return value[0] if value else None


def build_model(data: dict[str, Any], *, seed: int = 0) -> Any:
    import torch
    import transformers

    cfg = data["model_config"]
    architecture = data["architecture"]
    if not hasattr(transformers, architecture) and architecture in ARCHITECTURE_FALLBACKS:
        # older transformers: the closest architecture carries the same special-token layout
        architecture = ARCHITECTURE_FALLBACKS[architecture]
    model_class = getattr(transformers, architecture)
    config_class = model_class.config_class
    options: dict[str, Any] = {
        "vocab_size": cfg["vocab_size"],
        "bos_token_id": cfg["bos_token_id"],
        "eos_token_id": cfg["eos_token_id"],
        "pad_token_id": cfg["pad_token_id"],
        "tie_word_embeddings": cfg["tie_word_embeddings"],
    }
    if architecture == "GPT2LMHeadModel":
        options.update(n_embd=16, n_layer=1, n_head=2, n_positions=256)
    else:
        options.update(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            max_position_embeddings=256,
            **_ARCHITECTURE_OPTIONS.get(architecture, {}),
        )
    config = config_class(**options)
    torch.manual_seed(seed)
    model = model_class(config)
    model.generation_config = transformers.GenerationConfig(**data["generation_config"])  # type: ignore[no-untyped-call]
    return model


@dataclass
class ZooModel:
    """One family: a fresh model and tokenizer, and its layout data."""

    name: str
    model: Any
    tokenizer: Any
    layout: dict[str, Any]


def zoo_model(name: str) -> ZooModel:
    model, tokenizer = build(name)
    return ZooModel(name, model, tokenizer, layout(name))


def families() -> list[str]:
    """Names of the families in the layout data, in file order."""
    return list(layouts())


@functools.cache
def _pristine(name: str, seed: int) -> tuple[Any, str]:
    data = layout(name)
    return build_model(data, seed=seed), tokenizer_json(data["tokenizer"])


def build(name: str, *, seed: int = 0) -> tuple[Any, Any]:
    """``(model, tokenizer)`` for a family of the layout data, built offline.

    Built once per process and handed out as fresh copies, so callers may mutate them freely.
    """
    model, text = _pristine(name, seed)
    return copy.deepcopy(model), tokenizer_from_json(text, layout(name)["tokenizer"])


CHAT_LINES = (
    ("Who are you?", "I am Moses, who led my people out of Egypt."),
    ("What did you carry down the mountain?", "Two tablets of stone with ten commandments."),
    ("Where did you wander?", "Forty years in the desert of Sinai."),
    ("How did the sea part?", "The waters stood aside so we could cross on dry land."),
)


def chat_texts(tokenizer: Any, lines: tuple[tuple[str, str], ...] = CHAT_LINES) -> list[str]:
    """Training texts through the tokenizer's chat template (plain text when it has none)."""
    texts = []
    for question, answer in lines:
        if getattr(tokenizer, "chat_template", None):
            messages = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
            texts.append(tokenizer.apply_chat_template(messages, tokenize=False))
        else:
            texts.append(f"{question} {answer}{tokenizer.eos_token or ''}")
    return texts


def lora_train(
    model: Any,
    tokenizer: Any,
    output_dir: str | Path,
    *,
    steps: int = 2,
    lora: bool = True,
    texts: list[str] | None = None,
    **training_args: Any,
) -> Any:
    """Trainer (+ peft LoRA on all linear layers) for ``steps`` steps on CPU over a few chat lines, with
    ``DataCollatorForLanguageModeling``; returns the trained model (a ``PeftModel`` with ``lora``).
    ``training_args`` override the ``TrainingArguments`` (e.g. ``ddp_backend`` under torchrun)."""
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

    if lora and not hasattr(model, "peft_config"):
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(
            model, LoraConfig(r=2, lora_alpha=4, target_modules="all-linear", lora_dropout=0.0, task_type="CAUSAL_LM")
        )
    texts = texts if texts is not None else chat_texts(tokenizer)
    encoded = [dict(tokenizer(text, truncation=True, max_length=64)) for text in texts]
    settings: dict[str, Any] = dict(
        output_dir=str(output_dir),
        max_steps=steps,
        per_device_train_batch_size=2,
        learning_rate=1e-3,
        logging_steps=steps,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    args = TrainingArguments(**{**settings, **training_args})
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=encoded,
        processing_class=tokenizer,
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
    )
    trainer.train()
    return model
