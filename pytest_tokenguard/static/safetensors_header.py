"""The JSON header of a ``.safetensors`` file: tensor names, dtypes and shapes, never the tensor data.

The format (https://huggingface.co/docs/safetensors, "Format"): 8 bytes little-endian unsigned N, then N
bytes of UTF-8 JSON mapping each tensor name to ``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets
into the data that follows the header), plus an optional ``"__metadata__"`` object of strings. Read with
``struct`` and ``json`` (the ``safetensors`` package would bring its torch bindings along). The length is
checked before anything else is read: a corrupt or hostile prefix claiming 10**12 bytes costs an 8-byte read.
Every problem is a :class:`FolderError` naming the file.
"""

from __future__ import annotations

import json
import stat
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_tokenguard.static.folder import FolderError

#: largest header accepted, in bytes: the ``safetensors`` library's own limit (its ``MAX_HEADER_SIZE``)
MAX_HEADER_BYTES = 100_000_000
METADATA_KEY = "__metadata__"


@dataclass(frozen=True)
class TensorInfo:
    """One header entry: ``dtype`` as written (``"F32"``, ``"BF16"`` ...) and the ``shape``."""

    dtype: str
    shape: tuple[int, ...]


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def read_header(path: Path) -> dict[str, TensorInfo]:
    """Tensor name -> :class:`TensorInfo` from the header of ``path`` (``__metadata__`` left out).

    Raises :class:`FolderError` naming the file for: anything but a regular file, a file shorter than the
    8-byte length, a length above :data:`MAX_HEADER_BYTES` or beyond the end of the file (refused before the
    header is read), a header that is not a UTF-8 JSON object, an entry without a list-of-ints shape or valid
    ``data_offsets``, and tensor data that ends past the end of the file (an interrupted download).
    """
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):  # a FIFO would block, a device never ends
            kind = "a folder" if stat.S_ISDIR(info.st_mode) else "a FIFO, device or socket"
            raise FolderError(f"{path}: not a regular file ({kind})")
        size = info.st_size
        with open(path, "rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise FolderError(
                    f"{path}: not a safetensors file: {len(prefix)} bytes, shorter than the 8-byte header length (truncated?)"
                )
            (length,) = struct.unpack("<Q", prefix)
            if length > MAX_HEADER_BYTES:
                raise FolderError(
                    f"{path}: the safetensors header length is {length} bytes, above the {MAX_HEADER_BYTES}-byte limit "
                    "(not a safetensors file, or corrupt)"
                )
            if length > size - 8:
                raise FolderError(
                    f"{path}: the safetensors header length is {length} bytes but only {size - 8} bytes follow it (truncated?)"
                )
            raw = handle.read(length)
    except OSError as exc:
        raise FolderError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if len(raw) < length:  # the file shrank since stat()
        raise FolderError(f"{path}: the safetensors header ends early: {len(raw)} of {length} bytes (truncated?)")
    try:
        header = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise FolderError(f"{path}: the safetensors header is not UTF-8 text (byte {exc.start + 8})") from None
    except json.JSONDecodeError as exc:
        raise FolderError(f"{path}: the safetensors header is not JSON: {exc.msg} at byte {exc.pos + 8}") from None
    except (RecursionError, ValueError) as exc:
        raise FolderError(f"{path}: the safetensors header is not usable JSON ({type(exc).__name__})") from None
    if not isinstance(header, dict):
        raise FolderError(f"{path}: the safetensors header is not a JSON object (got {type(header).__name__})")
    tensors: dict[str, TensorInfo] = {}
    data_end = 0
    for name, entry in header.items():
        if name == METADATA_KEY:
            continue
        shape = entry.get("shape") if isinstance(entry, dict) else None
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        dtype = entry.get("dtype") if isinstance(entry, dict) else None
        if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
            raise FolderError(f"{path}: safetensors header entry {name!r}: shape must be a list of ints >= 0, got {shape!r}")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(_is_count(o) for o in offsets)
            or offsets[0] > offsets[1]
        ):
            raise FolderError(f"{path}: safetensors header entry {name!r}: data_offsets must be [begin, end], got {offsets!r}")
        if not isinstance(dtype, str):
            raise FolderError(f"{path}: safetensors header entry {name!r}: dtype must be a string, got {dtype!r}")
        tensors[name] = TensorInfo(dtype, tuple(shape))
        data_end = max(data_end, offsets[1])
    held = size - 8 - length
    if data_end > held:
        raise FolderError(
            f"{path}: truncated: the header describes {data_end} bytes of tensor data but the file holds {held} "
            "(an interrupted download or copy?)"
        )
    return tensors
