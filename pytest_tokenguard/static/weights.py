"""Embedding rows from a checkpoint's weight files: names and shapes from safetensors headers, no tensor data.

- Base checkpoint: ``model.safetensors``, else the shards ``model.safetensors.index.json`` maps the embedding
  tensors to (only those shards are opened). ``pytorch_model.bin`` is a pickle: never unpickled, rows unknown.
- peft adapter: ``adapter_model.safetensors``. peft writes whole embedding matrices there when the vocabulary
  was resized (``save_embedding_layers``, ``"auto"`` by default, and ``modules_to_save``), and LoRA factors
  whose shape carries the rows when LoRA targets the embeddings; they replace (or must fit) the base's rows
  when the adapter is loaded. Trainable-token deltas (``trainable_token_indices``) carry no row count.

The input embedding is found by its module name (``embed_tokens``, ``wte``, ``word_embeddings``, ``shared``
...), the output head by ``lm_head`` (or a BERT-style ``cls.predictions.decoder``); rows are ``shape[0]``
(``shape[1]`` of LoRA's ``lora_embedding_A``).

A two-model encoder-decoder (``EncoderDecoderModel``, ``VisionEncoderDecoderModel``) keeps each model's tensors
under ``encoder.`` / ``decoder.`` (transformers names submodules by attribute: ``self.encoder``, ``self.decoder``),
e.g. bert2bert's ``encoder.embeddings.word_embeddings.weight`` and ``decoder.bert.embeddings.word_embeddings.weight``
(``decoder.cls.predictions.decoder.weight`` only when untied: tied tensors are saved once); with ``sides`` the
rows are also read per side.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pytest_tokenguard.static.folder import FolderError, read_json
from pytest_tokenguard.static.safetensors_header import TensorInfo, read_header

INPUT, OUTPUT = "input_embeddings", "output_embeddings"
#: module names of a language model's input embedding, preferred first: Llama/Qwen/Mistral/Gemma/Phi-3,
#: GPT-2, BERT-style and BLOOM, GPT-NeoX, InternLM, T5/BART (``shared``: the encoder's and decoder's)
INPUT_NAMES = ("embed_tokens", "wte", "word_embeddings", "embed_in", "tok_embeddings", "shared")
#: module names of the output head (``embed_out``: GPT-NeoX)
OUTPUT_NAMES = ("lm_head", "embed_out")
#: BERT-style LM heads (``BertLMHeadModel`` / ``BertForMaskedLM``: ``cls.predictions.decoder``): "decoder" alone
#: names whole sub-models, so only this two-part suffix counts, after the names above
HEAD_SUFFIXES = (("predictions", "decoder"),)
#: the halves of a two-model encoder-decoder, as its tensor names start
SIDES = ("encoder", "decoder")
#: peft wrappers between the module name and ``.weight`` (``modules_to_save`` is cut with what follows it)
_WRAPPERS = ("base_layer", "original_module")

BASE_SAFETENSORS = "model.safetensors"
BASE_INDEX = "model.safetensors.index.json"
BASE_PICKLES = ("pytorch_model.bin", "pytorch_model.bin.index.json")
ADAPTER_SAFETENSORS = "adapter_model.safetensors"
ADAPTER_PICKLE = "adapter_model.bin"


@dataclass(frozen=True)
class _Candidate:
    name: str
    role: str
    rank: tuple[int, int]  # (name preference, depth): lower is the model's own embedding
    axis: int  # the shape axis that counts rows


@dataclass
class Rows:
    """Rows per role (``input_embeddings`` / ``output_embeddings``), the files read, and notes on what could not
    be read."""

    rows: dict[str, int] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: per side of a two-model encoder-decoder (``encoder`` / ``decoder``), rows per role (read with ``sides``)
    sides: dict[str, dict[str, int]] = field(default_factory=dict)

    def side(self, side: str) -> int | None:
        """Rows of one side's input embedding, else of its output head (a tied pair is saved once)."""
        found = self.sides.get(side, {})
        return found.get(INPUT, found.get(OUTPUT))


def _candidate(name: str) -> _Candidate | None:
    parts = name.split(".")
    roles: tuple[str, ...]
    if parts[-1] == "lora_embedding_A":  # LoRA on an embedding: [r, rows]
        module, axis, roles = parts[:-1], 1, (INPUT,)
    elif parts[-2:] == ["lora_B", "weight"]:  # LoRA on the output head: [rows, r]
        module, axis, roles = parts[:-2], 0, (OUTPUT,)
    elif parts[-1] == "weight":
        module, axis, roles = parts[:-1], 0, (INPUT, OUTPUT)
    else:  # biases, trainable-token deltas (token_adapter.trainable_tokens_delta: [n tokens, hidden]), ...
        return None
    if "modules_to_save" in module:  # older peft files: embed_tokens.modules_to_save[.default].weight
        module = module[: module.index("modules_to_save")]
    while module and module[-1] in _WRAPPERS:
        module = module[:-1]
    if not module:
        return None
    for role, names in ((INPUT, INPUT_NAMES), (OUTPUT, OUTPUT_NAMES)):
        if role in roles and module[-1] in names:
            return _Candidate(name, role, (names.index(module[-1]), len(module)), axis)
    if OUTPUT in roles and tuple(module[-2:]) in HEAD_SUFFIXES:
        return _Candidate(name, OUTPUT, (len(OUTPUT_NAMES), len(module)), axis)
    return None


def _wanted(names: Iterable[str]) -> dict[str, list[_Candidate]]:
    """Per role, the tensors that can be the model's own matrix: the preferred name (a language model's
    ``embed_tokens`` over a Q-Former's ``word_embeddings``), closest to the root (``model.embed_tokens`` over an
    MTP layer's ``model.layers.61.embed_tokens``). Several left (an encoder's and a decoder's) must agree."""
    by_role: dict[str, list[_Candidate]] = {}
    for name in names:
        candidate = _candidate(name)
        if candidate is not None:
            by_role.setdefault(candidate.role, []).append(candidate)
    return {role: [c for c in found if c.rank == min(c.rank for c in found)] for role, found in by_role.items()}


def _wanted_sides(names: Iterable[str], sides: bool) -> dict[str, dict[str, list[_Candidate]]]:
    """:func:`_wanted` for the whole model (key ``""``) and, with ``sides``, for the tensors under each side's
    prefix (the whole model's nearest embedding is the encoder's: the decoder's sits one module deeper)."""
    listed = list(names)
    wanted = {"": _wanted(listed)}
    if sides:
        for side in SIDES:
            wanted[side] = _wanted(name for name in listed if name.startswith(side + "."))
    return wanted


def _choose(path: Path, wanted: dict[str, list[_Candidate]], shapes: dict[str, TensorInfo], result: Rows, side: str = "") -> None:
    target = result.sides.setdefault(side, {}) if side else result.rows
    for role, candidates in wanted.items():
        counts: dict[str, int] = {}
        for candidate in candidates:
            shape = shapes[candidate.name].shape
            if len(shape) == 2:  # an embedding or head matrix; anything else is not what it is named after
                counts[candidate.name] = shape[candidate.axis]
        if len(set(counts.values())) > 1:
            listed = ", ".join(f"{name} ({rows} rows)" for name, rows in sorted(counts.items()))
            whose = f"the {side}'s " if side else "the "
            result.notes.append(f"{path}: {listed} disagree: {whose}{role.replace('_', ' ')} rows are unknown")
        elif counts:
            target[role] = next(iter(counts.values()))


def _safetensors(path: Path, result: Rows, sides: bool = False) -> None:
    header = read_header(path)
    result.files.append(str(path))
    for side, wanted in _wanted_sides(header, sides).items():
        _choose(path, wanted, header, result, side)


def _plain_file_name(index: Path, tensor: str, shard: object) -> str:
    if not isinstance(shard, str) or not shard or shard != os.path.basename(shard) or shard in (".", ".."):
        raise FolderError(f"{index}: weight_map[{tensor!r}] must be a file name in the same folder, got {shard!r}")
    return shard


def _sharded(index: Path, result: Rows, sides: bool = False) -> None:
    weight_map = read_json(index).get("weight_map")
    result.files.append(str(index))
    if not isinstance(weight_map, dict):
        raise FolderError(f"{index}: weight_map must be an object (tensor name -> shard file)")
    wanted = _wanted_sides(weight_map, sides)
    shards: dict[str, list[str]] = {}
    # (in the index's order, so an error names the same tensor as before sides were read)
    needed = dict.fromkeys(c.name for by_role in wanted.values() for candidates in by_role.values() for c in candidates)
    for name in needed:
        shard = _plain_file_name(index, name, weight_map[name])
        shards.setdefault(shard, []).append(name)
    shapes: dict[str, TensorInfo] = {}
    for shard, names in sorted(shards.items()):
        path = index.parent / shard
        if not os.path.lexists(path):
            raise FolderError(f"{path}: missing ({index.name} maps {names[0]} to it)")
        header = read_header(path)
        result.files.append(str(path))
        for name in names:
            if name not in header:
                raise FolderError(f"{path}: no tensor {name} ({index.name} maps it to this file)")
            shapes[name] = header[name]
    for side, by_role in wanted.items():
        _choose(index, by_role, shapes, result, side)


def base_rows(folder: Path, sides: bool = False) -> Rows:
    """Rows of the base checkpoint's input embedding and (untied) output head, from safetensors headers; with
    ``sides`` (a two-model encoder-decoder), also per side in :attr:`Rows.sides`."""
    result = Rows()
    if os.path.lexists(folder / BASE_SAFETENSORS):  # transformers prefers the single file too
        _safetensors(folder / BASE_SAFETENSORS, result, sides)
    elif os.path.lexists(folder / BASE_INDEX):
        _sharded(folder / BASE_INDEX, result, sides)
    else:
        pickled = next((name for name in BASE_PICKLES if os.path.lexists(folder / name)), None)
        if pickled is not None:
            result.notes.append(f"{pickled} is a pickle and is never unpickled: the checkpoint's embedding rows are unknown")
        else:
            result.notes.append(f"no {BASE_SAFETENSORS} (or {BASE_INDEX}): the checkpoint's embedding rows are unknown")
        return result
    if INPUT not in result.rows and not result.notes:  # (a note already says when candidates disagree)
        names = ", ".join(f"*{name}.weight" for name in INPUT_NAMES)
        result.notes.append(
            f"{result.files[0]}: no input embedding tensor ({names}): the checkpoint's embedding rows are unknown"
        )
    return result


def adapter_rows(folder: Path) -> Rows:
    """Rows of the embedding matrices a peft adapter carries (none for a plain LoRA adapter).

    Raises :class:`FolderError` when the folder holds neither ``adapter_model.safetensors`` nor ``adapter_model.bin``.
    """
    result = Rows()
    path = folder / ADAPTER_SAFETENSORS
    if os.path.lexists(path):
        _safetensors(path, result)
    elif os.path.lexists(folder / ADAPTER_PICKLE):
        result.notes.append(
            f"{ADAPTER_PICKLE} is a pickle and is never unpickled: whether the adapter carries its own embedding rows is unknown"
        )
    else:
        raise FolderError(f"{path}: missing (a peft adapter folder holds {ADAPTER_SAFETENSORS} or {ADAPTER_PICKLE})")
    return result
