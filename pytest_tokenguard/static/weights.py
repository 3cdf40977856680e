"""Embedding rows from a checkpoint's weight files: names and shapes from safetensors headers, no tensor data.

- Base checkpoint: ``model.safetensors``, else the shards ``model.safetensors.index.json`` maps the embedding
  tensors to (only those shards are opened). ``pytorch_model.bin`` is a pickle: never unpickled, rows unknown.
- peft adapter: ``adapter_model.safetensors``. peft writes whole embedding matrices there when the vocabulary
  was resized (``save_embedding_layers``, ``"auto"`` by default, and ``modules_to_save``), and LoRA factors
  whose shape carries the rows when LoRA targets the embeddings; they replace (or must fit) the base's rows
  when the adapter is loaded. Trainable-token deltas (``trainable_token_indices``) carry no row count.

The input embedding is found by its module name (``embed_tokens``, ``wte``, ``word_embeddings``, ``shared``
...), the output head by ``lm_head``; rows are ``shape[0]`` (``shape[1]`` of LoRA's ``lora_embedding_A``).
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


def _choose(path: Path, wanted: dict[str, list[_Candidate]], shapes: dict[str, TensorInfo], result: Rows) -> None:
    for role, candidates in wanted.items():
        counts: dict[str, int] = {}
        for candidate in candidates:
            shape = shapes[candidate.name].shape
            if len(shape) == 2:  # an embedding or head matrix; anything else is not what it is named after
                counts[candidate.name] = shape[candidate.axis]
        if len(set(counts.values())) > 1:
            listed = ", ".join(f"{name} ({rows} rows)" for name, rows in sorted(counts.items()))
            result.notes.append(f"{path}: {listed} disagree: the {role.replace('_', ' ')} rows are unknown")
        elif counts:
            result.rows[role] = next(iter(counts.values()))


def _safetensors(path: Path, result: Rows) -> None:
    header = read_header(path)
    result.files.append(str(path))
    _choose(path, _wanted(header), header, result)


def _plain_file_name(index: Path, tensor: str, shard: object) -> str:
    if not isinstance(shard, str) or not shard or shard != os.path.basename(shard) or shard in (".", ".."):
        raise FolderError(f"{index}: weight_map[{tensor!r}] must be a file name in the same folder, got {shard!r}")
    return shard


def _sharded(index: Path, result: Rows) -> None:
    weight_map = read_json(index).get("weight_map")
    result.files.append(str(index))
    if not isinstance(weight_map, dict):
        raise FolderError(f"{index}: weight_map must be an object (tensor name -> shard file)")
    wanted = _wanted(weight_map)
    shards: dict[str, list[str]] = {}
    for candidate in (c for candidates in wanted.values() for c in candidates):
        shard = _plain_file_name(index, candidate.name, weight_map[candidate.name])
        shards.setdefault(shard, []).append(candidate.name)
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
    _choose(index, wanted, shapes, result)


def base_rows(folder: Path) -> Rows:
    """Rows of the base checkpoint's input embedding and (untied) output head, from safetensors headers."""
    result = Rows()
    if os.path.lexists(folder / BASE_SAFETENSORS):  # transformers prefers the single file too
        _safetensors(folder / BASE_SAFETENSORS, result)
    elif os.path.lexists(folder / BASE_INDEX):
        _sharded(folder / BASE_INDEX, result)
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
