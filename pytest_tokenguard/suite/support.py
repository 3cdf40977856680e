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
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_tokenguard.static.alignment import current_alignment, predict_trainer_alignment
from pytest_tokenguard.static.checks import StaticFinding
from pytest_tokenguard.static.layout import FIELDS, valid_ids
from pytest_tokenguard.static.objects import base_model, layout_from_objects, tokenizer_end_of_turn
from pytest_tokenguard.static.weights import INPUT, OUTPUT
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


#: the oldest trl the SFT step and :func:`sft_config` serve: SFTConfig(max_length=...), and trl's trainers
#: mirroring the tokenizer's pad onto the model in ``__init__`` (TG102)
SFT_TRL = "1.13"


def sft_config(output_dir: Any, *, max_length: int = 64) -> Any:
    """trl's ``SFTConfig`` for one CPU step of two rows, no saving, no reporting (raises ``ImportError``
    without trl)."""
    from trl.trainer.sft_config import SFTConfig

    return SFTConfig(
        output_dir=str(output_dir),
        max_steps=1,
        per_device_train_batch_size=2,
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        save_strategy="no",
        logging_steps=1,
        max_length=max_length,
    )


DEDICATED_PAD = "<|tg_pad|>"
#: weight files of a base checkpoint / of a peft adapter, in the order transformers / peft prefer them
BASE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
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
    #: how the user's checkpoint was loaded (None for a zoo family)
    loading: Loading | None = None

    @property
    def is_user_checkpoint(self) -> bool:
        return self.data is None


def subject_names(model_path: str | None) -> list[str]:
    return [USER_PREFIX + Path(model_path).resolve().name] if model_path else zoo.families()


@dataclass(frozen=True)
class Loading:
    """How the suite loaded the user's checkpoint (``--tokenguard-model`` / ``--tokenguard-adapter``), decided
    once per run before any step: the resize an adapter with its own embedding matrices needs, or why the
    checkpoint does not load at all."""

    #: TG210 as the folder check reports it: the adapter's own embedding matrices differ from the base's
    finding: StaticFinding | None = None
    #: (base rows, adapter rows): the base was resized to the adapter's rows before ``PeftModel.from_pretrained``
    resized: tuple[int, int] | None = None
    #: why the checkpoint does not load, naming the file: the ``static_check`` step fails with it, the others skip
    problem: str | None = None
    #: the problem is TG210 itself: the adapter's rows differ from the base's and no resize of the base fits
    rows_problem: bool = False

    @property
    def resize_to(self) -> int | None:
        """The rows the base was resized to before loading the adapter (None: not resized)."""
        return self.resized[1] if self.resized is not None else None

    @property
    def tg210(self) -> str | None:
        """TG210 as the table marks it: ``TG210~`` where the suite resized the base (allowed: handled as every user of
        the adapter must), ``TG210!`` where it cannot, ``TG210`` where only the folder check saw it, else None."""
        if self.resized is not None:
            return "TG210~"
        if self.rows_problem:
            return "TG210!"
        return "TG210" if self.finding is not None else None

    @property
    def notes(self) -> list[str]:
        """What the summary table prints under the ``static_check`` step."""
        notes = []
        if self.resized is not None:
            before, rows = self.resized
            notes.append(
                f"TG210: the adapter carries its own {rows}-row embedding matrices and the base has {before} rows: "
                f"the suite resized the base to {rows} (model.resize_token_embeddings({rows})) before "
                "PeftModel.from_pretrained, as every user of this adapter must"
            )
        if self.problem is not None:
            notes.append(self.problem.splitlines()[0])
        return notes

    @property
    def skip_reason(self) -> str:
        """Why a step that needs the loaded checkpoint is skipped: the file the problem names, static_check says why."""
        named = (self.problem or "").split(": ", 1)[0]
        return f"the checkpoint does not load ({named}): static_check says why"


class CheckpointLoadError(Exception):
    """The user's checkpoint does not load; the message names the file (``Loading.problem``)."""


def resize_plan(base_rows: Mapping[str, int], adapter_rows: Mapping[str, int]) -> tuple[int | None, str | None]:
    """What to do before ``PeftModel.from_pretrained`` when an adapter carries its own embedding matrices:
    ``(rows, None)`` to resize the base to ``rows`` first, ``(None, None)`` when nothing is needed, or
    ``(None, why not)`` when no resize makes it load.

    ``base_rows`` / ``adapter_rows`` map ``input_embeddings`` / ``output_embeddings`` to rows (the base's as loaded,
    a tied base having no output entry; the adapter's from its safetensors header). ``resize_token_embeddings``
    gives both matrices one count, so the adapter's must agree; and a base is only grown: a base with more rows
    than the adapter is not the one the adapter was saved from (or was resized since), and shrinking it would drop
    rows its tokenizer may use."""
    wanted = sorted(set(adapter_rows.values()))
    if not wanted:
        return None, None
    if len(wanted) > 1:
        listed = ", ".join(f"{_MATRICES.get(name, name)} {rows}" for name, rows in sorted(adapter_rows.items()))
        return None, f"the adapter's own embedding matrices disagree ({listed}): no single resize of the base fits them"
    rows = wanted[0]
    have = {name: base_rows.get(name, base_rows.get(INPUT)) for name in adapter_rows}
    known = {name: count for name, count in have.items() if count is not None}
    larger = {name: count for name, count in known.items() if count > rows}
    if larger:
        listed = ", ".join(f"{_MATRICES.get(name, name)} {count}" for name, count in sorted(larger.items()))
        return None, (
            f"the base has more rows ({listed}) than the adapter's own embedding matrices ({rows}): the adapter was "
            "saved from another base, or this base was resized since; the suite grows a base to an adapter's rows but "
            f"does not shrink one (that would drop rows {rows}..{max(larger.values()) - 1}): load the adapter onto "
            "the base it was saved from"
        )
    return (rows, None) if any(count < rows for count in known.values()) else (None, None)


_MATRICES = {INPUT: "input embeddings", OUTPUT: "output head"}


def embedding_rows(model: Any) -> dict[str, int]:
    """Rows of a loaded model's input embeddings and, when it has its own (untied), output head."""
    inner = base_model(model)
    embeddings, head = inner.get_input_embeddings(), inner.get_output_embeddings()
    rows: dict[str, int] = {}
    if embeddings is not None:
        rows[INPUT] = int(embeddings.weight.shape[0])
    if head is not None and (embeddings is None or head.weight is not embeddings.weight):
        rows[OUTPUT] = int(head.weight.shape[0])
    return rows


def resize_base(model: Any, rows: int) -> None:
    """``model.resize_token_embeddings(rows)``, to exactly ``rows`` (``pad_to_multiple_of=rows``: the rows are the
    adapter's, not ours to round, and transformers' rounding hint, TG140, would be noise). No mean resizing: the
    adapter's matrices replace the rows they carry."""
    model.resize_token_embeddings(rows, pad_to_multiple_of=rows, mean_resizing=False)


def _summary(exc: BaseException, limit: int = 400) -> str:
    """``Type: message`` on one line (a multi-line message joined with ``;``), at most ``limit`` characters."""
    text = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _first_present(folder: Path, names: tuple[str, ...]) -> Path:
    return next((folder / name for name in names if (folder / name).exists()), folder / names[0])


@dataclass(frozen=True)
class _Pristine:
    loading: Loading
    model: Any = None
    tokenizer: bytes = b""


@functools.cache
def _user_pristine(path: str, adapter: str | None) -> _Pristine:
    """The user's checkpoint, loaded once per process: the base, its tokenizer (the adapter's where the adapter folder
    has one) and the adapter, onto the base resized first where the adapter's own embedding matrices have more rows.
    Every failure becomes ``Loading.problem`` naming the file (and is cached as such), never an exception."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pytest_tokenguard.static.checks import check_layout
    from pytest_tokenguard.static.folder import FolderError, read_folder

    base_dir = Path(path)
    try:
        model: Any = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    except Exception as exc:  # whatever the user's files raise is this step's finding, not a traceback
        weights = _first_present(base_dir, BASE_WEIGHTS)
        problem = f"{weights}: the base checkpoint does not load (AutoModelForCausalLM.from_pretrained): {_summary(exc)}"
        return _Pristine(Loading(problem=problem))
    tokenizer_dir = Path(adapter) if adapter and _has_tokenizer(Path(adapter)) else base_dir
    try:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    except Exception as exc:
        where = "the checkpoint folder" + (" or the adapter folder" if adapter else "")
        missing = "" if _has_tokenizer(tokenizer_dir) else f", no tokenizer.json or tokenizer_config.json in {where}"
        problem = f"{tokenizer_dir}: the tokenizer does not load (AutoTokenizer.from_pretrained{missing}): {_summary(exc)}"
        return _Pristine(Loading(problem=problem))
    if not adapter:
        return _Pristine(Loading(), model, pickle.dumps(tokenizer))

    from peft import PeftModel

    weights = _first_present(Path(adapter), ADAPTER_WEIGHTS)
    try:
        layout = read_folder(path, adapter).layout
    except FolderError as exc:  # checked when the options were read; the files may have changed since
        return _Pristine(Loading(problem=str(exc)))
    finding = next((f for f in check_layout(layout).findings if f.code == "TG210"), None)
    before = embedding_rows(model)
    rows, why_not = resize_plan(before, layout.adapter_rows)
    if why_not is not None:
        problem = f"{weights}: {why_not}" + (f"\n{finding}" if finding is not None else "")
        return _Pristine(Loading(finding, problem=problem, rows_problem=True))
    resized = None
    if rows is not None:
        resize_base(model, rows)
        resized = (before.get(INPUT, min(before.values())), rows)  # (a plan to resize means rows were known)
    try:
        model = PeftModel.from_pretrained(model, adapter, is_trainable=True, local_files_only=True)
    except Exception as exc:
        after = f" resized to {rows} rows" if rows is not None else ""
        problem = f"{weights}: the adapter does not load onto the base{after} (PeftModel.from_pretrained): {_summary(exc)}"
        if weights.name == ADAPTER_WEIGHTS[1] and "size mismatch" in problem:  # a pickle's rows are not read beforehand
            problem += (
                f" ({weights.name} is never read before loading: where it carries resized embedding matrices, resize "
                "the base to their rows before PeftModel.from_pretrained, or save the adapter as safetensors)"
            )
        return _Pristine(Loading(finding, resized, problem))
    return _Pristine(Loading(finding, resized), model, pickle.dumps(tokenizer))


def _has_tokenizer(folder: Path) -> bool:
    return (folder / "tokenizer_config.json").exists() or (folder / "tokenizer.json").exists()


def load_subject(name: str, model_path: str | None = None, adapter_path: str | None = None) -> Subject:
    """Fresh copies of a zoo family or of the user's checkpoint (each loaded once per process). Raises
    :class:`CheckpointLoadError` naming the file when the user's checkpoint does not load (see :func:`user_loading`)."""
    if name.startswith(USER_PREFIX):
        assert model_path is not None
        pristine = _user_pristine(model_path, adapter_path)
        if pristine.loading.problem is not None:
            raise CheckpointLoadError(pristine.loading.problem)
        model, tokenizer = copy.deepcopy(pristine.model), pickle.loads(pristine.tokenizer)
        return Subject(name, model, tokenizer, None, Path(model_path), pristine.loading)
    model, tokenizer = zoo.build(name)
    return Subject(name, model, tokenizer, zoo.layout(name))


def user_loading(model_path: str, adapter_path: str | None) -> Loading:
    """How the user's checkpoint loads (loading it once per process): the resize it needed, or why it does not."""
    return _user_pristine(model_path, adapter_path).loading


def checkpoint_problem(model_path: str, adapter_path: str | None) -> str | None:
    """Why ``--tokenguard-model`` / ``--tokenguard-adapter`` cannot be used, naming the file; None when fine."""
    from pytest_tokenguard.static.folder import FolderError, read_folder

    try:
        read_folder(model_path, adapter_path)
    except FolderError as exc:
        return str(exc)
    if not weights_present(Path(model_path)):
        return f"{Path(model_path)}: no weights (model.safetensors, pytorch_model.bin or a sharded index)"
    if adapter_path and not any((Path(adapter_path) / name).exists() for name in ADAPTER_WEIGHTS):
        return f"{Path(adapter_path)}: no adapter weights (adapter_model.safetensors or adapter_model.bin)"
    return None


def weights_present(folder: Path) -> bool:
    return any((folder / name).exists() for name in BASE_WEIGHTS)


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
