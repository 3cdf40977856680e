"""`tokenguard check` on saved checkpoint folders: it agrees with the object API, its exit codes and output
are what scripts rely on, it imports nothing heavy, and bad input ends in one clear line, never a traceback."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pytest_tokenguard.cli import main
from pytest_tokenguard.static import safetensors_header
from pytest_tokenguard.static.alignment import align_special_tokens
from pytest_tokenguard.static.api import check_special_tokens
from pytest_tokenguard.static.checks import STATIC_CODES
from pytest_tokenguard.suite import zoo

pytest.importorskip("torch")  # the zoo builds real (tiny) models
pytest.importorskip("transformers")

REPO = Path(__file__).resolve().parents[1]
FAMILIES = sorted(zoo.layouts())
MiB = 1024 * 1024


@dataclass
class Run:
    rc: int
    out: str
    err: str

    def json(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.out)
        return data


def run_cli(capsys: pytest.CaptureFixture[str], *argv: Any) -> Run:
    """``main(argv)`` in-process; argparse's usage errors exit through SystemExit."""
    capsys.readouterr()
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as exc:
        rc = exc.code  # type: ignore[assignment]
    out, err = capsys.readouterr()
    return Run(rc, out, err)


def subprocess_env(**extra: str) -> dict[str, str]:
    """This source tree first on the path, whatever is installed in the environment."""
    env = dict(os.environ, **extra)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


def run_module(*argv: Any, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest_tokenguard", *map(str, argv)],
        capture_output=True,
        text=True,
        env=subprocess_env(**env),
        timeout=120,
    )


@dataclass
class Saved:
    path: Path
    #: ``check_special_tokens(model, tokenizer)`` on the very objects that were saved
    findings: list[dict[str, Any]]

    @property
    def has_errors(self) -> bool:
        return any(f["severity"] == "error" for f in self.findings)


def save(model: Any, tokenizer: Any, path: Path) -> Saved:
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return Saved(path, check_special_tokens(model, tokenizer).to_dict()["findings"])


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Saved]:
    """Every zoo family saved as built (``name``) and after ``align_special_tokens`` (``name+aligned``).

    Each family is built once per module: building is what costs (big vocabularies).
    """
    root = tmp_path_factory.mktemp("zoo")
    folders: dict[str, Saved] = {}
    for name in FAMILIES:
        model, tokenizer = zoo.build(name)
        folders[name] = save(model, tokenizer, root / name)
        align_special_tokens(model, tokenizer)
        folders[f"{name}+aligned"] = save(model, tokenizer, root / f"{name}+aligned")
    return folders


# -- the CLI and the object API agree ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", FAMILIES)
def test_cli_agrees_with_object_api(saved: dict[str, Saved], capsys: pytest.CaptureFixture[str], name: str) -> None:
    folder = saved[name]
    run = run_cli(capsys, "check", folder.path, "--format", "json")
    assert run.err == ""
    assert run.json()["findings"] == folder.findings
    assert run.rc == (1 if folder.has_errors else 0)


#: families whose pad = eos = the chat end of turn is the only stop id (TG206 error, fixed only by a dedicated pad)
PAD_IS_THE_ONLY_STOP = {"smollm2-135m-instruct", "tinyllama-1.1b-chat-v1.0"}


@pytest.mark.parametrize("name", FAMILIES)
def test_aligned_checkpoint_passes(saved: dict[str, Saved], capsys: pytest.CaptureFixture[str], name: str) -> None:
    folder = saved[f"{name}+aligned"]
    run = run_cli(capsys, "check", folder.path, "--format", "json")
    assert run.json()["findings"] == folder.findings
    errors = {f["code"] for f in folder.findings if f["severity"] == "error"}
    if name in PAD_IS_THE_ONLY_STOP:  # alignment cannot give these a dedicated pad: TG206 stays an error
        assert errors == {"TG206"} and run.rc == 1
    else:
        assert not errors, folder.findings
        assert run.rc == 0  # warnings (conventions such as Qwen's missing BOS) do not fail without --strict


def _qwen_pad_and_stop_ids(model: Any, tokenizer: Any) -> None:
    model.config.pad_token_id = None
    model.generation_config.eos_token_id = [151643]  # <|endoftext|> only: not the chat end of turn <|im_end|>


def _bos_out_of_range(model: Any, tokenizer: Any) -> None:
    model.config.bos_token_id = model.config.vocab_size + 5


def _tokens_beyond_embeddings(model: Any, tokenizer: Any) -> None:
    tokenizer.add_special_tokens({"additional_special_tokens": ["<tool_call>", "</tool_call>"]})  # no resize


def _stop_ids_without_end_of_turn(model: Any, tokenizer: Any) -> None:
    model.generation_config.eos_token_id = [32000]  # <|endoftext|>, not <|end|>


MISALIGNED = [
    pytest.param("qwen3-0.6b", _qwen_pad_and_stop_ids, {"TG201", "TG203", "TG208"}, id="qwen3-no-pad-wrong-stop"),
    pytest.param("gpt2", _bos_out_of_range, {"TG201", "TG204"}, id="gpt2-bos-out-of-range"),
    pytest.param("mistral-7b-instruct-v0.3", _tokens_beyond_embeddings, {"TG205"}, id="mistral-added-tokens"),
    pytest.param("phi-3-mini-4k-instruct", _stop_ids_without_end_of_turn, {"TG208"}, id="phi3-no-end-of-turn-stop"),
]


@pytest.mark.parametrize(("family", "misalign", "codes"), MISALIGNED)
def test_cli_agrees_on_misaligned_checkpoints(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    family: str,
    misalign: Callable[[Any, Any], None],
    codes: set[str],
) -> None:
    model, tokenizer = zoo.build(family)
    misalign(model, tokenizer)
    folder = save(model, tokenizer, tmp_path / family)
    run = run_cli(capsys, "check", folder.path, "--format", "json")
    findings = run.json()["findings"]
    assert findings == folder.findings
    assert codes <= {f["code"] for f in findings if f["severity"] == "error"}
    assert run.rc == 1


# -- exit codes and output ---------------------------------------------------------------------------------------


def test_clean_checkpoint_exits_0(saved: dict[str, Saved], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Gemma-2-it as shipped: both stop ids in its eos lists, but the tokenizer eos <eos> is not the end of turn
    assert [(f["code"], f["severity"]) for f in saved["gemma-2-2b-it"].findings] == [("TG212", "warning")]
    model, tokenizer = zoo.build("gemma-2-2b-it")
    tokenizer.eos_token = "<end_of_turn>"  # TG212's fix: servers stop on the end of turn
    run = run_cli(capsys, "check", save(model, tokenizer, tmp_path / "gemma").path, "--strict")
    assert (run.rc, run.err) == (0, "")
    assert "no findings" in run.out
    assert run.out.endswith("ok: 0 error(s), 0 warning(s) (strict: warnings fail)\n")


def test_warning_fails_only_with_strict(saved: dict[str, Saved], capsys: pytest.CaptureFixture[str]) -> None:
    path = saved["llama-3.2-1b"].path
    # TG215: the zoo's stand-in tokenizer adds no bos (suite/expected.py)
    assert [f["code"] for f in saved["llama-3.2-1b"].findings] == ["TG207", "TG215"]
    lenient = run_cli(capsys, "check", path)
    assert lenient.rc == 0
    assert lenient.out.endswith("\nok: 0 error(s), 2 warning(s)\n")
    strict = run_cli(capsys, "check", path, "--strict")
    assert strict.rc == 1
    assert strict.out.endswith("\nFAIL: 0 error(s), 2 warning(s) (strict: warnings fail)\n")
    data = run_cli(capsys, "check", path, "--strict", "--format", "json").json()
    assert (data["strict"], data["exit_code"], data["ok"]) == (True, 1, True)  # ok: no errors; strict fails anyway


def test_text_output_has_the_table_and_every_finding(saved: dict[str, Saved], capsys: pytest.CaptureFixture[str]) -> None:
    folder = saved["qwen3-0.6b"]
    run = run_cli(capsys, "check", folder.path)
    assert run.rc == 1
    lines = run.out.splitlines()
    assert lines[0] == f"tokenguard check {folder.path}"
    assert lines[1].split() == ["model", "config", "generation", "config", "tokenizer"]
    assert [line.split()[0] for line in lines[2:5]] == ["bos", "eos", "pad"]
    assert "151645 '<|im_end|>'" in lines[3]
    assert "chat end of turn: 151645 '<|im_end|>'" in run.out
    for finding in folder.findings:
        assert f"{finding['code']} {finding['severity']}: {finding['message']}" in run.out
        assert f"    fix: {finding['hint']}" in run.out
    errors = sum(f["severity"] == "error" for f in folder.findings)
    assert lines[-1] == f"FAIL: {errors} error(s), {len(folder.findings) - errors} warning(s)"


def tokenizer_files(folder: Path, leading: list[str]) -> list[str]:
    """The files the reader lists, in its order; which tokenizer files exist depends on the transformers
    version that saved them (5.x writes chat_template.jinja, 4.x special_tokens_map.json)."""
    names = [*leading, "tokenizer_config.json", "special_tokens_map.json", "tokenizer.json", "chat_template.jinja"]
    return [str(folder / name) for name in names if (folder / name).exists()]


def test_json_output_is_complete_and_stable(saved: dict[str, Saved], capsys: pytest.CaptureFixture[str]) -> None:
    folder = saved["qwen3-0.6b"]
    first = run_cli(capsys, "check", folder.path, "--format", "json")
    second = run_cli(capsys, "check", folder.path, "--format", "json")
    assert first.out == second.out  # byte-identical
    data = first.json()
    assert first.out == json.dumps(data, indent=2, sort_keys=True) + "\n"  # keys sorted, one document
    assert set(data) == {"schema_version", "path", "adapter", "strict", "exit_code", "files", "ok", "findings", "layout"}
    assert (data["schema_version"], data["path"], data["adapter"], data["strict"]) == (1, str(folder.path), None, False)
    assert (data["exit_code"], data["ok"]) == (first.rc, False) == (1, False)
    # the embedding rows come from the safetensors header, read last
    assert data["files"] == [
        *tokenizer_files(folder.path, ["config.json", "generation_config.json"]),
        str(folder.path / "model.safetensors"),
    ]
    layout = data["layout"]
    assert layout["model_config"] == {"bos": 151643, "eos": 151645, "pad": None}
    assert layout["generation_config"] == {"bos": 151643, "eos": [151645, 151643], "pad": 151643}
    assert layout["tokenizer"] == {"bos": None, "eos": 151645, "pad": 151643}
    assert layout["end_of_turn"] == ["<|im_end|>", 151645]
    assert (layout["vocab_size"], layout["tokenizer_length"]) == (151936, 151669)
    assert (layout["embedding_rows"], layout["base_rows"], layout["adapter_rows"]) == (151936, {"input_embeddings": 151936}, {})


def test_codes_lists_every_static_code(capsys: pytest.CaptureFixture[str]) -> None:
    run = run_cli(capsys, "codes")
    assert run.rc == 0
    from pytest_tokenguard.guard.catalog import RUNTIME_CODES

    assert [line.split()[0] for line in run.out.splitlines()] == sorted(RUNTIME_CODES) + list(STATIC_CODES)


def test_python_dash_m_gives_the_same_output(saved: dict[str, Saved], capsys: pytest.CaptureFixture[str]) -> None:
    path = saved["llama-3.2-1b"].path
    for args in (["--format", "json"], ["--strict"]):
        child = run_module("check", path, *args)
        in_process = run_cli(capsys, "check", path, *args)
        assert (child.returncode, child.stdout, child.stderr) == (in_process.rc, in_process.out, "")


def test_output_survives_a_stdout_that_cannot_encode_the_tokens(saved: dict[str, Saved], tmp_path: Path) -> None:
    # A DeepSeek-style eos; an ascii (or cp1252) stdout cannot print it and used to end in UnicodeEncodeError.
    folder = copy_checkpoint(saved, tmp_path)
    eos = "<\uff5cend\u2581of\u2581sentence\uff5c>"
    for name in ("tokenizer.json", "tokenizer_config.json"):
        path = folder / name
        path.write_text(path.read_text(encoding="utf-8").replace('"</s>"', json.dumps(eos, ensure_ascii=False)), encoding="utf-8")
    child = run_module("check", folder, PYTHONIOENCODING="ascii")
    assert (child.returncode, child.stderr) == (0, "")
    assert "2 '<\\uff5cend\\u2581of\\u2581sentence\\uff5c>'" in child.stdout


# -- nothing heavy, no network -----------------------------------------------------------------------------------

NO_HEAVY_IMPORTS = """
import socket, sys

attempts = []

def refuse(*args, **kwargs):
    attempts.append(args)
    raise OSError("tokenguard test: network access refused")

socket.socket.connect = socket.socket.connect_ex = refuse
socket.create_connection = socket.getaddrinfo = refuse

from pytest_tokenguard.cli import main

rc = main(["check", sys.argv[1], "--format", "json"])
heavy = sorted(m for m in sys.modules
               if m.split(".")[0] in {"torch", "transformers", "tokenizers", "huggingface_hub", "safetensors", "peft"})
assert not heavy, heavy
assert not attempts, attempts
print("no heavy imports, no network", file=sys.stderr)
raise SystemExit(rc)
"""


def test_cli_imports_no_torch_no_transformers_and_uses_no_network(saved: dict[str, Saved]) -> None:
    folder = saved["qwen3-0.6b"]
    child = subprocess.run(
        [sys.executable, "-c", NO_HEAVY_IMPORTS, str(folder.path)],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=120,
    )
    assert child.stderr == "no heavy imports, no network\n"
    assert child.returncode == 1
    assert json.loads(child.stdout)["findings"] == folder.findings


# -- bad input: exit 2 and one line naming the file and the problem (or exit 1 with TG204 for bad ids) -----------


BAD_INPUT_FAMILY = "mistral-7b-instruct-v0.3"


def copy_checkpoint(saved: dict[str, Saved], tmp_path: Path, weights: bool = False) -> Path:
    """A small valid checkpoint (mistral: added tokens, chat template), without the weights unless ``weights``."""
    ignore = None if weights else shutil.ignore_patterns("*.safetensors")
    return Path(shutil.copytree(saved[BAD_INPUT_FAMILY].path, tmp_path / "ckpt", ignore=ignore))


@pytest.fixture(scope="module")
def lora_adapter(saved: dict[str, Saved], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter of the bad-input checkpoint, saved by peft (``adapter_config.json``, ``adapter_model.safetensors``)."""
    peft = pytest.importorskip("peft")
    from transformers import AutoModelForCausalLM

    path = tmp_path_factory.mktemp("lora") / "lora"
    model = AutoModelForCausalLM.from_pretrained(saved[BAD_INPUT_FAMILY].path)
    config = peft.LoraConfig(r=2, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    peft.get_peft_model(model, config).save_pretrained(path)
    return path


def edit(path: Path, **changes: Any) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    data.update(changes)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")


def replace(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def check(ckpt: Path, *extra: Any) -> list[Any]:
    return ["check", ckpt, *extra]


def adapter_dir(ckpt: Path) -> Path:
    path = ckpt.parent / "adapter"
    path.mkdir()
    return path


def _symlink_loop(ckpt: Path) -> list[Any]:
    (ckpt / "config.json").unlink()
    (ckpt / "config.json").symlink_to("config.json")
    return check(ckpt)


def _sparse(ckpt: Path, name: str, size: int) -> list[Any]:
    os.truncate(ckpt / name, size)  # sparse: only stat() can afford to look at it
    return check(ckpt)


def _fifo(ckpt: Path) -> list[Any]:
    (ckpt / "config.json").unlink()
    os.mkfifo(ckpt / "config.json")  # open() on a FIFO nobody writes to blocks forever
    return check(ckpt)


def _folder_named_config(ckpt: Path) -> list[Any]:
    (ckpt / "config.json").unlink()
    (ckpt / "config.json").mkdir()
    return check(ckpt)


def _non_utf8(ckpt: Path) -> list[Any]:
    path = ckpt / "config.json"
    path.write_bytes(path.read_bytes().replace(b'"mistral"', b'"mistral\xff"'))
    return check(ckpt)


def _bom(ckpt: Path) -> list[Any]:
    path = ckpt / "config.json"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    return check(ckpt)


def _truncated_tokenizer(ckpt: Path) -> list[Any]:  # an interrupted download
    path = ckpt / "tokenizer.json"
    path.write_bytes(path.read_bytes()[:-8])
    return check(ckpt)


def _clashing_added_tokens(ckpt: Path) -> list[Any]:
    path = ckpt / "tokenizer.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    data["added_tokens"].append({**data["added_tokens"][2], "content": "<|eos2|>"})  # id 2 is </s>
    path.write_text(json.dumps(data), encoding="utf-8")
    return check(ckpt)


def _deeply_nested_added_tokens(ckpt: Path) -> list[Any]:
    replace(ckpt / "tokenizer.json", '"added_tokens": [', '"added_tokens": [' + "[" * 100_000 + "]" * 100_000 + ",")
    return check(ckpt)


def _no_vocab(ckpt: Path) -> list[Any]:
    path = ckpt / "tokenizer.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    del data["model"]["vocab"]
    path.write_text(json.dumps(data), encoding="utf-8")
    return check(ckpt)


def _unigram_bad_piece(ckpt: Path) -> list[Any]:
    path = ckpt / "tokenizer.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    data["model"] = {"type": "Unigram", "vocab": [["<unk>", 0.0], [["not", "a", "string"], -1.0]]}
    path.write_text(json.dumps(data), encoding="utf-8")
    return check(ckpt)


def _huge_vocab_id(ckpt: Path) -> list[Any]:
    # "!" (id 5) is no added token, so the tokenizer's pad is looked up in the vocab, where its id has 5000 digits
    edit(ckpt / "tokenizer_config.json", pad_token="!")
    replace(ckpt / "tokenizer.json", '"!": 5,', '"!": ' + "9" * 5000 + ",")
    return check(ckpt)


def _decoder_clash(ckpt: Path) -> list[Any]:
    edit(ckpt / "tokenizer_config.json", added_tokens_decoder={"2": {"content": "<|end|>", "special": True}})
    return check(ckpt)


def _adapter_without_config(ckpt: Path) -> list[Any]:
    return check(ckpt, "--adapter", adapter_dir(ckpt))


def _adapter_config_malformed(ckpt: Path) -> list[Any]:
    adapter = adapter_dir(ckpt)
    (adapter / "adapter_config.json").write_text('{"peft_type": "LORA", "r": }', encoding="utf-8")
    return check(ckpt, "--adapter", adapter)


# safetensors files: the copy's model.safetensors and the LoRA adapter's adapter_model.safetensors (copied to lora/),
# as written by transformers and peft, then damaged

WEIGHTS, ADAPTER_WEIGHTS = "ckpt/model.safetensors", "lora/adapter_model.safetensors"
SHARD = "model-00001-of-00001.safetensors"


def header_bytes(header: Any, data: bytes = b"") -> bytes:
    """A safetensors file: the 8-byte little-endian header length, the header (JSON of ``header``, or raw bytes),
    the tensor data."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def split_safetensors(content: bytes) -> tuple[dict[str, Any], bytes]:
    (length,) = struct.unpack("<Q", content[:8])
    header: dict[str, Any] = json.loads(content[8 : 8 + length])
    return header, content[8 + length :]


def _bytes(change: Callable[[bytes], bytes]) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        path.write_bytes(change(path.read_bytes()))

    return damage


def _header_entry(**changes: Any) -> Callable[[Path], None]:
    """Rewrite the embedding's (or first LoRA factor's) header entry, the tensor data kept."""

    def change(content: bytes) -> bytes:
        header, data = split_safetensors(content)
        name = min(set(header) - {"__metadata__"})
        header[name] = {**header[name], **changes}
        return header_bytes(header, data)

    return _bytes(change)


def _a_folder(path: Path) -> None:
    path.unlink()
    path.mkdir()


def _damaged(file: str, damage: Callable[[Path], None]) -> Callable[[Path], list[Any]]:
    """Damage ``file`` (``WEIGHTS`` or ``ADAPTER_WEIGHTS``); the adapter's check loads the LoRA adapter."""

    def setup(ckpt: Path) -> list[Any]:
        damage(ckpt.parent / file)
        return check(ckpt, "--adapter", ckpt.parent / "lora") if file == ADAPTER_WEIGHTS else check(ckpt)

    return setup


def _sharded(**weight_map: str) -> Callable[[Path], list[Any]]:
    """model.safetensors renamed to a shard and a ``model.safetensors.index.json`` with ``weight_map``."""

    def setup(ckpt: Path) -> list[Any]:
        (ckpt / "model.safetensors").rename(ckpt / SHARD)
        (ckpt / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
        return check(ckpt)

    return setup


def _shard_index(content: str) -> Callable[[Path], list[Any]]:
    def setup(ckpt: Path) -> list[Any]:
        (ckpt / "model.safetensors").rename(ckpt / SHARD)
        (ckpt / "model.safetensors.index.json").write_text(content)
        return check(ckpt)

    return setup


def _adapter_without_weights(ckpt: Path) -> list[Any]:
    (ckpt.parent / ADAPTER_WEIGHTS).unlink()  # adapter_config.json stays
    return check(ckpt, "--adapter", ckpt.parent / "lora")


#: damage done alike to the base's and the adapter's safetensors file: (damage, problem, header reads)
SAFETENSORS_DAMAGE: dict[str, tuple[Callable[[Path], None], str, list[int] | None]] = {
    "empty": (
        _bytes(lambda b: b""),
        "not a safetensors file: 0 bytes, shorter than the 8-byte header length (truncated?)",
        [8],
    ),
    "shorter-than-the-length": (
        _bytes(lambda b: b[:3]),
        "not a safetensors file: 3 bytes, shorter than the 8-byte header length (truncated?)",
        [8],
    ),
    # the length is read, then refused without reading the header it claims
    "header-past-the-end": (
        _bytes(lambda b: b[:100]),
        "bytes but only 92 bytes follow it (truncated?)",
        [8],
    ),
    "oversized-header": (
        _bytes(lambda b: struct.pack("<Q", 10**12) + b[8:]),
        "the safetensors header length is 1000000000000 bytes, above the 100000000-byte limit (not a safetensors file, "
        "or corrupt)",
        [8],
    ),
    "header-not-json": (
        _bytes(lambda b: b[:8] + b"PK\x03\x04" + b[12:]),
        "the safetensors header is not JSON: Expecting value at byte 8",
        None,
    ),
    "header-not-utf8": (_bytes(lambda b: b[:10] + b"\xff" + b[11:]), "the safetensors header is not UTF-8 text (byte 10)", None),
    "header-a-list": (
        _bytes(lambda b: header_bytes([1, 2], split_safetensors(b)[1])),
        "the safetensors header is not a JSON object (got list)",
        None,
    ),
    "header-bad-shape": (_header_entry(shape="2x2"), "shape must be a list of ints >= 0, got '2x2'", None),
    "header-bad-offsets": (_header_entry(data_offsets=[16, 0]), "data_offsets must be [begin, end], got [16, 0]", None),
    "data-truncated": (
        _bytes(lambda b: b[:-100]),
        "bytes of tensor data but the file holds",  # (the sizes depend on the model)
        None,
    ),
    "a-folder": (_a_folder, "not a regular file (a folder)", None),
}


def _write(name: str, content: str | bytes) -> Callable[[Path], list[Any]]:
    def setup(ckpt: Path) -> list[Any]:
        path = ckpt / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        return check(ckpt)

    return setup


def _edit(name: str, **changes: Any) -> Callable[[Path], list[Any]]:
    def setup(ckpt: Path) -> list[Any]:
        edit(ckpt / name, **changes)
        return check(ckpt)

    return setup


def _remove(name: str) -> Callable[[Path], list[Any]]:
    def setup(ckpt: Path) -> list[Any]:
        (ckpt / name).unlink()
        return check(ckpt)

    return setup


@dataclass
class Bad:
    """``setup`` breaks a copy of a valid checkpoint and returns the argv; ``file`` (relative to the folder that
    holds ``ckpt``) must be named on stderr with ``problem``; for exit 1, ``problem`` is a TG204 message."""

    setup: Callable[[Path], Sequence[Any]]
    rc: int
    file: str | None
    problem: str
    #: run as ``python -m pytest_tokenguard`` with a timeout: input that used to crash or hang
    fresh_process: bool = False
    #: the copy keeps its model.safetensors, and lora/ holds a LoRA adapter of it (the cases that damage them)
    weights: bool = False
    #: the sizes the safetensors header reader may read from ``file`` (a spy on its ``open``): refused early
    header_reads: list[int] | None = None


BAD_INPUT = {
    # the folders
    "missing-folder": Bad(lambda d: check(d / "nope"), 2, "ckpt/nope", "checkpoint folder does not exist"),
    "path-is-a-file": Bad(lambda d: check(d / "config.json"), 2, "ckpt/config.json", "checkpoint is not a folder"),
    "adapter-folder-missing": Bad(lambda d: check(d, "--adapter", d.parent / "nope"), 2, "nope", "adapter folder does not exist"),
    "adapter-without-adapter-config": Bad(
        _adapter_without_config, 2, "adapter/adapter_config.json", "missing (not a peft adapter folder)"
    ),
    "adapter-config-malformed": Bad(
        _adapter_config_malformed, 2, "adapter/adapter_config.json", "malformed JSON at line 1 column 28: Expecting value"
    ),
    # config.json
    "config-missing": Bad(_remove("config.json"), 2, "ckpt/config.json", "missing (a checkpoint folder needs config.json)"),
    "config-malformed": Bad(
        _write("config.json", '{"vocab_size": 32768 "eos_token_id": 2}'),
        2,
        "ckpt/config.json",
        "malformed JSON at line 1 column 22: Expecting ',' delimiter",
    ),
    "config-empty": Bad(_write("config.json", ""), 2, "ckpt/config.json", "empty file, expected a JSON object"),
    "config-a-list": Bad(_write("config.json", "[1, 2]"), 2, "ckpt/config.json", "expected a JSON object, got list"),
    "config-not-utf8": Bad(_non_utf8, 2, "ckpt/config.json", "not UTF-8 text (byte "),
    "config-bom": Bad(_bom, 2, "ckpt/config.json", "Unexpected UTF-8 BOM"),
    "config-int-too-long": Bad(
        _write("config.json", '{"eos_token_id": ' + "1" * 5000 + "}"),
        2,
        "ckpt/config.json",
        "invalid JSON (Exceeds the limit (4300 digits)",
        fresh_process=True,
    ),
    "config-symlink-loop": Bad(_symlink_loop, 2, "ckpt/config.json", "cannot read (Too many levels of symbolic links)"),
    "config-17-MiB": Bad(
        lambda d: _sparse(d, "config.json", 17 * MiB),
        2,
        "ckpt/config.json",
        "17.0 MiB is larger than the 16 MiB limit for this file",
    ),
    "config-a-fifo": Bad(_fifo, 2, "ckpt/config.json", "not a regular file (a FIFO, device or socket)", fresh_process=True),
    "config-a-folder": Bad(_folder_named_config, 2, "ckpt/config.json", "not a regular file (a folder)"),
    "vocab-size-a-string": Bad(
        _edit("config.json", vocab_size="32768"), 2, "ckpt/config.json", "vocab_size must be a positive int, got '32768'"
    ),
    # bad ids are findings, not unreadable input
    "id-a-string": Bad(_edit("config.json", eos_token_id="2"), 1, None, "model config eos '2': not an int (str)"),
    "id-a-float": Bad(_edit("config.json", bos_token_id=1.0), 1, None, "model config bos 1.0: not an int (float)"),
    "id-negative": Bad(_edit("config.json", pad_token_id=-1), 1, None, "model config pad -1: negative"),
    "id-a-bool": Bad(
        _edit("generation_config.json", bos_token_id=True), 1, None, "generation config bos True: not an int (bool)"
    ),
    "eos-empty-list": Bad(
        _edit("generation_config.json", eos_token_id=[]),
        1,
        None,
        "generation config eos is an empty list: no token ends generation",
    ),
    # generation_config.json
    "generation-config-a-list": Bad(
        _write("generation_config.json", "[]"), 2, "ckpt/generation_config.json", "expected a JSON object, got list"
    ),
    # tokenizer_config.json
    "tokenizer-config-malformed": Bad(
        _write("tokenizer_config.json", '{"eos_token": "</s>",}'),
        2,
        "ckpt/tokenizer_config.json",
        "malformed JSON at line 1 column 22",
    ),
    "special-token-an-int": Bad(
        _edit("tokenizer_config.json", eos_token=5),
        2,
        "ckpt/tokenizer_config.json",
        'eos_token must be a string, an object with "content", or null; got 5',
    ),
    "special-token-zero": Bad(
        _edit("tokenizer_config.json", pad_token=0),
        2,
        "ckpt/tokenizer_config.json",
        'pad_token must be a string, an object with "content", or null; got 0',
    ),
    "decoder-clashes-with-tokenizer-json": Bad(
        _decoder_clash, 2, "ckpt/tokenizer_config.json", "added tokens '</s>' and '<|end|>' both have id 2"
    ),
    # tokenizer.json
    "tokenizer-json-malformed": Bad(
        _write("tokenizer.json", '{"version": "1.0", oops}'), 2, "ckpt/tokenizer.json", "malformed JSON at line 1 column 20"
    ),
    "tokenizer-json-truncated": Bad(_truncated_tokenizer, 2, "ckpt/tokenizer.json", "(the file ends early: truncated?)"),
    "tokenizer-json-no-vocab": Bad(
        _no_vocab, 2, "ckpt/tokenizer.json", "no model vocab (model.vocab is missing or not an object/list)"
    ),
    "tokenizer-json-not-utf8": Bad(
        _write("tokenizer.json", b'{"added_tokens": [], "model": {"vocab": {"\xff": 0}}}'),
        2,
        "ckpt/tokenizer.json",
        "not UTF-8 text (byte 42)",
    ),
    "added-tokens-clash": Bad(
        _clashing_added_tokens, 2, "ckpt/tokenizer.json", "added tokens '</s>' and '<|eos2|>' both have id 2"
    ),
    "added-tokens-nested-deeply": Bad(
        _deeply_nested_added_tokens, 2, "ckpt/tokenizer.json", "JSON nested too deeply", fresh_process=True
    ),
    "unigram-piece-not-a-string": Bad(
        _unigram_bad_piece, 2, "ckpt/tokenizer.json", "model.vocab list entries must be [piece, score] with a string piece"
    ),
    "vocab-id-too-long": Bad(_huge_vocab_id, 2, "ckpt/tokenizer.json", "the id of '!' in model.vocab is not a usable int"),
    "tokenizer-json-600-MiB": Bad(
        lambda d: _sparse(d, "tokenizer.json", 600 * MiB),
        2,
        "ckpt/tokenizer.json",
        "600.0 MiB is larger than the 512 MiB limit for this file",
    ),
    # safetensors weights: the base's model.safetensors and the adapter's adapter_model.safetensors
    **{
        f"{prefix}-{name}": Bad(_damaged(file, damage), 2, file, problem, weights=True, header_reads=reads)
        for prefix, file in (("weights", WEIGHTS), ("adapter-weights", ADAPTER_WEIGHTS))
        for name, (damage, problem, reads) in SAFETENSORS_DAMAGE.items()
    },
    "adapter-weights-length-2**64-1": Bad(
        _damaged(ADAPTER_WEIGHTS, _bytes(lambda b: struct.pack("<Q", 2**64 - 1) + b"{}")),
        2,
        ADAPTER_WEIGHTS,
        "the safetensors header length is 18446744073709551615 bytes, above the 100000000-byte limit (not a "
        "safetensors file, or corrupt)\n",
        fresh_process=True,
        weights=True,
    ),
    "adapter-weights-missing": Bad(
        _adapter_without_weights,
        2,
        ADAPTER_WEIGHTS,
        "missing (a peft adapter folder holds adapter_model.safetensors or adapter_model.bin)",
        weights=True,
    ),
    # sharded weights: model.safetensors.index.json and the shards it names
    "shard-missing": Bad(
        _sharded(**{"model.embed_tokens.weight": "model-00002-of-00002.safetensors"}),
        2,
        "ckpt/model-00002-of-00002.safetensors",
        "missing (model.safetensors.index.json maps model.embed_tokens.weight to it)",
        weights=True,
    ),
    "shard-outside-the-folder": Bad(
        _sharded(**{"model.embed_tokens.weight": "../model.safetensors"}),
        2,
        "ckpt/model.safetensors.index.json",
        "weight_map['model.embed_tokens.weight'] must be a file name in the same folder, got '../model.safetensors'",
        weights=True,
    ),
    "shard-without-the-tensor": Bad(
        _sharded(**{"transformer.wte.weight": SHARD}),
        2,
        f"ckpt/{SHARD}",
        "no tensor transformer.wte.weight (model.safetensors.index.json maps it to this file)",
        weights=True,
    ),
    "shard-index-malformed": Bad(
        _shard_index('{"weight_map": {'),
        2,
        "ckpt/model.safetensors.index.json",
        "malformed JSON at line 1 column 17",
        weights=True,
    ),
    "shard-index-weight-map-a-list": Bad(
        _shard_index('{"weight_map": []}'),
        2,
        "ckpt/model.safetensors.index.json",
        "weight_map must be an object (tensor name -> shard file)",
        weights=True,
    ),
    # the command line (argparse)
    "unknown-option": Bad(lambda d: check(d, "--bogus"), 2, None, "unrecognized arguments: --bogus"),
    "missing-path": Bad(lambda d: ["check"], 2, None, "the following arguments are required: path"),
    "empty-path": Bad(lambda d: ["check", ""], 2, None, "argument path: must not be empty"),
    "bad-format": Bad(lambda d: check(d, "--format", "xml"), 2, None, "argument --format: invalid choice: 'xml'"),
    "no-command": Bad(lambda d: [], 2, None, "the following arguments are required: command"),
}


class ReadSpy:
    """``open`` for the safetensors header module that records every read: (file, size)."""

    def __init__(self) -> None:
        self.reads: list[tuple[Path, int]] = []

    def sizes(self, path: Path) -> list[int]:
        return [size for read, size in self.reads if read == path]

    def __call__(self, path: Any, mode: str) -> Any:
        spy = self
        handle = open(path, mode)  # closed by Recording.__exit__

        class Recording:
            def __enter__(self) -> Recording:
                return self

            def __exit__(self, *exc: object) -> None:
                handle.close()

            def read(self, size: int) -> bytes:
                spy.reads.append((Path(path), size))
                data: bytes = handle.read(size)
                return data

        return Recording()


@pytest.mark.parametrize("case", BAD_INPUT.values(), ids=BAD_INPUT.keys())
def test_bad_input(
    saved: dict[str, Saved],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
    case: Bad,
) -> None:
    if case.setup is _fifo and not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    ckpt = copy_checkpoint(saved, tmp_path, weights=case.weights)
    if case.weights:
        shutil.copytree(request.getfixturevalue("lora_adapter"), tmp_path / "lora")
    spy = ReadSpy()
    if case.header_reads is not None:
        monkeypatch.setattr(safetensors_header, "open", spy, raising=False)
    argv = case.setup(ckpt)
    if case.fresh_process:
        child = run_module(*argv)
        run = Run(child.returncode, child.stdout, child.stderr)
    else:
        run = run_cli(capsys, *argv)
    assert "Traceback" not in run.err
    assert run.rc == case.rc, run.err
    if case.rc == 1:
        assert run.err == ""
        findings = json.loads(run_cli(capsys, *argv, "--format", "json").out)["findings"]
        assert case.problem in [f["message"] for f in findings if f["code"] == "TG204"]
        return
    assert run.out == ""
    if case.file is None:  # argparse: usage line, then the error
        assert run.err.startswith("usage: tokenguard")
        assert f": error: {case.problem}" in run.err.splitlines()[-1]
    else:
        assert run.err.startswith(f"tokenguard: error: {tmp_path / case.file}: ")
        assert case.problem in run.err
        assert run.err.count("\n") == 1  # one line
    if case.header_reads is not None:
        assert case.file is not None
        assert spy.sizes(tmp_path / case.file) == case.header_reads


def test_the_weights_corpus_damages_readable_weights(
    saved: dict[str, Saved], lora_adapter: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # undamaged, the copy and its LoRA adapter are read (rows from both headers) and the check runs
    ckpt = copy_checkpoint(saved, tmp_path, weights=True)
    run = run_cli(capsys, "check", ckpt, "--adapter", lora_adapter, "--format", "json")
    assert run.err == ""
    data = run.json()
    assert data["files"][-2:] == [str(ckpt / "model.safetensors"), str(lora_adapter / "adapter_model.safetensors")]
    assert data["findings"] == saved[BAD_INPUT_FAMILY].findings
    assert (data["layout"]["base_rows"], data["layout"]["adapter_rows"]) == (
        {"input_embeddings": 32768, "output_embeddings": 32768},
        {},
    )
    tensors = set(split_safetensors((ckpt / "model.safetensors").read_bytes())[0]) - {"__metadata__"}
    adapter_tensors = set(split_safetensors((lora_adapter / "adapter_model.safetensors").read_bytes())[0]) - {"__metadata__"}
    # the entries _header_entry rewrites: the head, a LoRA factor
    assert (min(tensors), min(adapter_tensors).rsplit(".", 2)[-2:]) == ("lm_head.weight", ["lora_A", "weight"])
    # and a shard index that maps every tensor to the renamed file reads the same rows
    _sharded(**dict.fromkeys(tensors, SHARD))(ckpt)
    sharded = run_cli(capsys, "check", ckpt, "--format", "json").json()
    assert sharded["layout"]["base_rows"] == data["layout"]["base_rows"]


# -- adapters ----------------------------------------------------------------------------------------------------


def test_adapter_tokenizer_takes_precedence(saved: dict[str, Saved], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    peft = pytest.importorskip("peft")
    base = saved["qwen3-0.6b"]
    model, tokenizer = zoo.build("qwen3-0.6b")
    lora = peft.get_peft_model(model, peft.LoraConfig(r=2, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    adapter = tmp_path / "adapter"
    lora.save_pretrained(adapter)
    tokenizer.add_special_tokens({"pad_token": "<|tg_pad|>"})  # fine-tuned with a dedicated pad: id 151669
    tokenizer.save_pretrained(adapter)
    expected = check_special_tokens(lora, tokenizer).to_dict()["findings"]

    run = run_cli(capsys, "check", base.path, "--adapter", adapter, "--format", "json")
    data = run.json()
    assert data["findings"] == expected != base.findings
    assert data["layout"]["tokenizer"]["pad"] == 151669 == tokenizer.pad_token_id
    pad = [f for f in data["findings"] if f["code"] == "TG201" and f["field"] == "pad"]
    assert pad[0]["values"] == {"model": None, "tokenizer": 151669}
    assert data["adapter"] == str(adapter)
    assert data["files"] == [
        str(adapter / "adapter_config.json"),
        str(base.path / "config.json"),
        str(base.path / "generation_config.json"),
        *tokenizer_files(adapter, []),
        str(base.path / "model.safetensors"),
        str(adapter / "adapter_model.safetensors"),  # a LoRA adapter: no embedding matrices of its own
    ]
    assert run.rc == 1
    text = run_cli(capsys, "check", base.path, "--adapter", adapter)
    assert text.out.startswith(f"tokenguard check {base.path} + adapter {adapter}\n")

    # the base alone, and an adapter that brings no tokenizer: the base's tokenizer and findings
    assert run_cli(capsys, "check", base.path, "--format", "json").json()["findings"] == base.findings
    bare = tmp_path / "bare-adapter"
    bare.mkdir()
    shutil.copy(adapter / "adapter_config.json", bare)
    shutil.copy(adapter / "adapter_model.safetensors", bare)  # an adapter folder without weights is unreadable input
    data = run_cli(capsys, "check", base.path, "--adapter", bare, "--format", "json").json()
    assert data["findings"] == base.findings
    assert str(base.path / "tokenizer.json") in data["files"]


def test_nested_text_config_takes_missing_ids_from_the_top_level(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # transformers 4.x saves only non-default values inside text_config (llava-style checkpoints)
    (tmp_path / "config.json").write_text(
        json.dumps({"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "text_config": {"vocab_size": 100}})
    )
    (tmp_path / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "bos_token": "<s>",
                "eos_token": "</s>",
                "pad_token": "<pad>",
                "added_tokens_decoder": {"0": {"content": "<pad>"}, "1": {"content": "<s>"}, "2": {"content": "</s>"}},
            }
        )
    )
    run = run_cli(capsys, "check", tmp_path, "--format", "json")
    data = run.json()
    assert data["layout"]["model_config"] == {"bos": 1, "eos": 2, "pad": 0} and data["layout"]["vocab_size"] == 100
    assert not [f for f in data["findings"] if f["code"] == "TG201"]
