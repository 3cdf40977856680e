"""Building blocks of the bundled regression suite (``pytest_tokenguard.suite``), testable on their own.

A *subject* is what the suite runs on: a zoo family (tiny model with a real layout) or the user's own
checkpoint (``--tokenguard-model`` / ``--tokenguard-adapter``). transformers, torch and peft are
imported inside the functions only.
"""

from __future__ import annotations

import copy
import functools
import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_tokenguard.static.alignment import current_alignment, predict_trainer_alignment
from pytest_tokenguard.static.layout import FIELDS, valid_ids
from pytest_tokenguard.static.objects import base_model, layout_from_objects, tokenizer_end_of_turn
from pytest_tokenguard.suite import zoo

#: The character-chat app's sampling (max_new_tokens, min_new_tokens, temperature, ...).
APP_SAMPLING: dict[str, Any] = dict(
    max_new_tokens=50,
    min_new_tokens=5,
    temperature=0.8,
    top_p=0.9,
    top_k=50,
    do_sample=True,
    repetition_penalty=1.05,
    num_beams=1,
)
USER_PREFIX = "model:"
DEDICATED_PAD = "<|tg_pad|>"
PROMPTS = ("Hi.", "Who led the people out of Egypt?", "Tell me, in a few words, what you carried down the mountain.")


@dataclass
class Subject:
    """What one suite test runs on: fresh, mutable copies."""

    name: str
    model: Any
    tokenizer: Any
    #: the family's layout data, or None for the user's checkpoint
    data: dict[str, Any] | None
    #: the user's checkpoint folder (the base the adapter is reloaded onto)
    path: Path | None = None

    @property
    def is_user_checkpoint(self) -> bool:
        return self.data is None


def subject_names(model_path: str | None) -> list[str]:
    return [USER_PREFIX + Path(model_path).resolve().name] if model_path else zoo.families()


@functools.cache
def _user_pristine(path: str, adapter: str | None) -> tuple[Any, bytes]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model: Any = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    tokenizer_dir = adapter if adapter and _has_tokenizer(Path(adapter)) else path
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter, is_trainable=True, local_files_only=True)
    return model, pickle.dumps(tokenizer)


def _has_tokenizer(folder: Path) -> bool:
    return (folder / "tokenizer_config.json").exists() or (folder / "tokenizer.json").exists()


def load_subject(name: str, model_path: str | None = None, adapter_path: str | None = None) -> Subject:
    """Fresh copies of a zoo family or of the user's checkpoint (each loaded once per process)."""
    if name.startswith(USER_PREFIX):
        assert model_path is not None
        model, tokenizer = _user_pristine(model_path, adapter_path)
        return Subject(name, copy.deepcopy(model), pickle.loads(tokenizer), None, Path(model_path))
    model, tokenizer = zoo.build(name)
    return Subject(name, model, tokenizer, zoo.layout(name))


def checkpoint_problem(model_path: str, adapter_path: str | None) -> str | None:
    """Why ``--tokenguard-model`` / ``--tokenguard-adapter`` cannot be used, naming the file; None when fine."""
    from pytest_tokenguard.static.folder import FolderError, read_folder

    try:
        read_folder(model_path, adapter_path)
    except FolderError as exc:
        return str(exc)
    if not weights_present(Path(model_path)):
        return f"{Path(model_path)}: no weights (model.safetensors, pytorch_model.bin or a sharded index)"
    if adapter_path and not any(
        (Path(adapter_path) / name).exists() for name in ("adapter_model.safetensors", "adapter_model.bin")
    ):
        return f"{Path(adapter_path)}: no adapter weights (adapter_model.safetensors or adapter_model.bin)"
    return None


def weights_present(folder: Path) -> bool:
    names = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
    return any((folder / name).exists() for name in names)


# --- training ---------------------------------------------------------------------------------------------


def usual_setup(tokenizer: Any) -> str | None:
    """What most fine-tuning scripts do first: pad with eos when the tokenizer has no pad token."""
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
        return f"tokenizer.pad_token = tokenizer.eos_token ({tokenizer.eos_token!r})"
    return None


#: The "moses" character's lines, short: the zoo's tokenizers are character-level, and every token
#: costs a full real-size vocabulary of logits.
MOSES_LINES = (
    ("Who are you?", "I am Moses."),
    ("Where were you?", "On Sinai."),
    ("What did you bring?", "The law."),
    ("And the sea?", "It parted."),
)


def training_texts(tokenizer: Any) -> list[str]:
    """Chat-formatted lines ending with the eos token, as SFT scripts build them."""
    eos = tokenizer.eos_token or ""
    texts = zoo.chat_texts(tokenizer, MOSES_LINES)
    return [text if text.rstrip().endswith(eos) else text + eos for text in texts]


def expected_trainer_updates(model: Any, tokenizer: Any, synthesizing: bool) -> dict[str, Any]:
    """The TG101 dict the guarded training will show: the installed Trainer's, or the synthesized one."""
    if synthesizing:
        return current_alignment(layout_from_objects(model, tokenizer))
    return predict_trainer_alignment(model, tokenizer)


def train(model: Any, tokenizer: Any, output_dir: Path, steps: int = 2) -> Any:
    return zoo.lora_train(model, tokenizer, output_dir, steps=steps, texts=training_texts(tokenizer))


# --- labels ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EosLabels:
    """Real eos positions of the collated training batch whose label was kept / masked, and the batch itself
    (``input_ids``, ``attention_mask``, ``labels``: batch x sequence tensors)."""

    kept: int
    masked: int
    batch: Any = None


def eos_labels(tokenizer: Any, eos_ids: list[int]) -> EosLabels:
    """Collate the training texts with ``DataCollatorForLanguageModeling`` and count the real (not
    padding) eos positions whose label was kept or masked to -100."""
    from transformers import DataCollatorForLanguageModeling

    collator = DataCollatorForLanguageModeling(tokenizer, mlm=False)
    batch = collator([dict(tokenizer(text)) for text in training_texts(tokenizer)])
    real = batch["attention_mask"] == 1
    kept = masked = 0
    for eos in eos_ids:
        at_eos = (batch["input_ids"] == eos) & real
        masked += int((at_eos & (batch["labels"] == -100)).sum())
        kept += int((at_eos & (batch["labels"] == eos)).sum())
    return EosLabels(kept, masked, batch)


def align_with_own_pad(model: Any, tokenizer: Any) -> bool:
    """``align_special_tokens``, and where pad = eos = the chat end of turn is the only stop id (a TG206 error:
    SmolLM2, TinyLlama) a pad token of its own, which alignment cannot invent. Returns whether one was added."""
    from pytest_tokenguard.static.alignment import align_special_tokens
    from pytest_tokenguard.static.api import check_special_tokens

    align_special_tokens(model, tokenizer)
    if not any(f.code == "TG206" and f.severity == "error" for f in check_special_tokens(model, tokenizer).findings):
        return False
    add_dedicated_pad(model, tokenizer)
    return True


def add_dedicated_pad(model: Any, tokenizer: Any) -> int:
    """The fix for pad == eos: a pad token of its own (embeddings resized only when needed)."""
    tokenizer.add_special_tokens({"pad_token": DEDICATED_PAD})
    rows = layout_from_objects(model).rows
    if rows is not None and len(tokenizer) > rows:
        # a multiple of 64 (what transformers advises, else it logs TG140); no mean resizing (TG141)
        model.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=64, mean_resizing=False)
    pad: int = tokenizer.pad_token_id
    model.config.pad_token_id = pad
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = pad
    return pad


# --- generation --------------------------------------------------------------------------------------------


def end_of_turn_id(tokenizer: Any) -> int | None:
    found, _ = tokenizer_end_of_turn(tokenizer)
    return found[1] if found else tokenizer.eos_token_id


def prompts(tokenizer: Any) -> list[str]:
    """Prompts of different lengths, through the chat template when there is one."""
    if getattr(tokenizer, "chat_template", None):
        return [
            tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)
            for text in PROMPTS
        ]
    return list(PROMPTS)


def encode_prompts(tokenizer: Any, side: str = "left") -> Any:
    old = tokenizer.padding_side
    tokenizer.padding_side = side
    try:
        return tokenizer(
            prompts(tokenizer), return_tensors="pt", padding=True, add_special_tokens=False, return_token_type_ids=False
        )
    finally:
        tokenizer.padding_side = old


def force_token_processor(token_id: int, at_steps: list[int], prompt_length: int, stop_ids: list[int]) -> Any:
    """A logits processor that makes row i emit ``token_id`` as its ``at_steps[i]``-th new token, and no
    stop id before that (so where generation stops is decided here, not by chance)."""
    from transformers import LogitsProcessor

    class ForceToken(LogitsProcessor):
        def __call__(self, input_ids: Any, scores: Any) -> Any:
            step = input_ids.shape[1] - prompt_length
            for row, at in enumerate(at_steps):
                if step < at:
                    scores[row, stop_ids] = -float("inf")
                elif step == at:
                    scores[row, :] = -float("inf")
                    scores[row, token_id] = 0.0
            return scores

    return ForceToken()


# --- save and reload ---------------------------------------------------------------------------------------


def saved_ids(folder: Path) -> dict[str, dict[str, Any]]:
    """bos/eos/pad as written in ``config.json`` and ``generation_config.json`` (``{}`` when absent)."""
    result: dict[str, dict[str, Any]] = {}
    for name in ("config.json", "generation_config.json"):
        path = folder / name
        data = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        result[name] = {key: data.get(f"{key}_token_id", "absent") for key in FIELDS}
    return result


def object_ids(model: Any) -> dict[str, dict[str, Any]]:
    inner = base_model(model)
    generation = getattr(inner, "generation_config", None)
    return {
        "config.json": {key: getattr(inner.config, f"{key}_token_id", None) for key in FIELDS},
        "generation_config.json": {key: getattr(generation, f"{key}_token_id", None) for key in FIELDS}
        if generation is not None
        else {},
    }


def nulls_over_ints(before: dict[str, dict[str, Any]], saved: dict[str, dict[str, Any]]) -> list[tuple[tuple[str, str], str]]:
    """Fields that held an int id before and were written as null (or dropped): ((file, field), message)."""
    problems = []
    for file, ids in before.items():
        for key, value in ids.items():
            written = saved.get(file, {}).get(key)
            if valid_ids(value) and written in (None, "absent"):
                problems.append(((file, key), f"{file}: {key}_token_id {value!r} saved as {written}"))
    return problems
