"""`tokenguard check ORG/NAME`: a model id is read from its snapshot in the local Hugging Face cache, offline.

The cache is built here with the real layout (``models--Org--Name/{blobs,refs,snapshots/<commit>}``, snapshot
files linking to blobs). huggingface_hub reads ``HF_HUB_CACHE``/``HF_HOME`` when it is imported, and this process
imported it long ago (transformers): every run is a child process with the environment set, sockets refused,
``HF_ENDPOINT`` unroutable and no offline mode, which reports whether it imported huggingface_hub at all.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from pytest_tokenguard.cli import main
from pytest_tokenguard.suite import zoo

pytest.importorskip("torch")  # the zoo builds real (tiny) models
pytest.importorskip("transformers")
pytest.importorskip("huggingface_hub")

REPO = Path(__file__).resolve().parents[1]
BASE_ID = "mistralai/Mistral-7B-Instruct-v0.3"
ADAPTER_ID = "tokenguard-tests/mistral-lora-pad"
UNCACHED_ID = "Qwen/Qwen3-0.6B"
MAIN = hashlib.sha1(b"main").hexdigest()  # refs/main
OLDER = hashlib.sha1(b"older").hexdigest()  # a snapshot no ref names: only --revision <commit> finds it
ADAPTER_MAIN = hashlib.sha1(b"adapter").hexdigest()
UNROUTABLE = "http://127.0.0.1:9"  # the discard port: nothing answers, a request would fail or hang

# The child: no socket may connect or resolve; writes what it saw to $TOKENGUARD_TEST_PROBE.
CHILD = """
import json, os, socket, sys

attempts = []

def refuse(*args, **kwargs):
    attempts.append(repr(args))
    raise OSError("tokenguard test: network access refused")

socket.socket.connect = socket.socket.connect_ex = refuse
socket.create_connection = socket.getaddrinfo = refuse

from pytest_tokenguard.cli import main

try:
    rc = main(sys.argv[1:])
except SystemExit as exc:  # argparse
    rc = exc.code
with open(os.environ["TOKENGUARD_TEST_PROBE"], "w", encoding="utf-8") as probe:
    json.dump({"attempts": attempts, "huggingface_hub": "huggingface_hub" in sys.modules}, probe)
sys.exit(rc)
"""


def hub_cli() -> str:
    """The CLI the installed huggingface_hub provides (its console scripts), found on disk beside python."""
    scripts = {e.name for e in metadata.distribution("huggingface_hub").entry_points if e.group == "console_scripts"}
    name = "hf" if "hf" in scripts else "huggingface-cli"
    assert name in scripts
    return name


@dataclass
class Hub:
    cache: Path
    main: Path  # snapshots/MAIN: the checkpoint as built
    older: Path  # snapshots/OLDER: an earlier commit with a broken config, other findings
    adapter: Path | None = None  # the adapter repo's snapshots/ADAPTER_MAIN


@dataclass
class Run:
    rc: int
    out: str
    err: str
    imported_hub: bool

    def json(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.out)
        return data


def run(hub: Hub | None, *argv: Any, cwd: Path | None = None, **env: str | None) -> Run:
    """``tokenguard`` in a child process: HF_HUB_CACHE is the fake cache, no offline mode, the endpoint unroutable,
    sockets refused (``env`` adds or, with None, removes variables)."""
    environ = dict(os.environ)
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME", "HUGGINGFACE_HUB_CACHE", "XDG_CACHE_HOME"):
        environ.pop(name, None)
    environ["HF_ENDPOINT"] = UNROUTABLE
    if hub is not None:
        environ["HF_HUB_CACHE"] = str(hub.cache)
    environ["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    handle, name = tempfile.mkstemp(prefix="tokenguard-probe-", suffix=".json")
    os.close(handle)
    probe = Path(name)
    environ["TOKENGUARD_TEST_PROBE"] = str(probe)
    for name, value in env.items():
        if value is None:
            environ.pop(name, None)
        else:
            environ[name] = value
    child = subprocess.run(
        [sys.executable, "-c", CHILD, *map(str, argv)], capture_output=True, text=True, env=environ, cwd=cwd, timeout=120
    )
    seen = json.loads(probe.read_text(encoding="utf-8"))
    probe.unlink()
    assert seen["attempts"] == [], seen  # no connection, no name lookup
    assert "Traceback" not in child.stderr, child.stderr
    return Run(child.returncode, child.stdout, child.stderr, seen["huggingface_hub"])


def cache_snapshot(cache: Path, repo_id: str, commit: str, source: Path, ref: str | None = None) -> Path:
    """``source``'s files as huggingface_hub stores a download: content in blobs/, snapshots/<commit>/<file>
    a relative symlink to its blob, refs/<ref> the commit (no newline)."""
    storage = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = storage / "snapshots" / commit
    for file in sorted(p for p in source.rglob("*") if p.is_file()):
        data = file.read_bytes()
        blob = storage / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / file.relative_to(source)
        link.parent.mkdir(parents=True, exist_ok=True)
        try:
            link.symlink_to(os.path.relpath(blob, link.parent))
        except OSError:  # no symlinks (Windows without developer mode): huggingface_hub copies too
            shutil.copyfile(blob, link)
    if ref is not None:
        (storage / "refs").mkdir(parents=True, exist_ok=True)
        (storage / "refs" / ref).write_text(commit, encoding="utf-8")
    return snapshot


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Hub:
    """The base model cached at two commits: MAIN (as built, refs/main) and OLDER (no ref)."""
    sources = tmp_path_factory.mktemp("sources")
    cache = tmp_path_factory.mktemp("hub-cache").resolve()  # huggingface_hub resolves the cache folder
    model, tokenizer = zoo.build("mistral-7b-instruct-v0.3")
    model.save_pretrained(sources / "main")
    tokenizer.save_pretrained(sources / "main")
    model.config.bos_token_id = model.config.vocab_size + 5  # an older commit's broken config: TG201/TG204 errors
    model.save_pretrained(sources / "older")
    tokenizer.save_pretrained(sources / "older")
    return Hub(
        cache=cache,
        main=cache_snapshot(cache, BASE_ID, MAIN, sources / "main", ref="main"),
        older=cache_snapshot(cache, BASE_ID, OLDER, sources / "older"),
    )


@pytest.fixture(scope="module")
def hub_with_adapter(hub: Hub, tmp_path_factory: pytest.TempPathFactory) -> Hub:
    """The same cache with a LoRA adapter repo (refs/main) whose saved tokenizer has a dedicated pad."""
    peft = pytest.importorskip("peft")
    source = tmp_path_factory.mktemp("adapter")
    model, tokenizer = zoo.build("mistral-7b-instruct-v0.3")
    lora = peft.get_peft_model(model, peft.LoraConfig(r=2, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    lora.save_pretrained(source)
    tokenizer.add_special_tokens({"pad_token": "<|tg_pad|>"})
    tokenizer.save_pretrained(source)
    hub.adapter = cache_snapshot(hub.cache, ADAPTER_ID, ADAPTER_MAIN, source, ref="main")
    return hub


def snapshot_entry(repo_id: str, revision: str, folder: Path) -> dict[str, str]:
    return {"repo_id": repo_id, "revision": revision, "commit": folder.name, "folder": str(folder)}


def without(data: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k not in keys}


# -- a cached model id is its snapshot folder ---------------------------------------------------------------------


def test_model_id_reports_what_its_snapshot_folder_reports(hub: Hub) -> None:
    by_folder = run(hub, "check", hub.main, "--format", "json")
    by_id = run(hub, "check", BASE_ID, "--format", "json")
    assert (by_id.rc, by_id.err) == (by_folder.rc, "") and by_folder.err == ""
    assert by_id.imported_hub and not by_folder.imported_hub  # a folder never imports huggingface_hub
    folder_data, id_data = by_folder.json(), by_id.json()
    assert "snapshots" not in folder_data  # the folder report keeps its keys
    assert (id_data["path"], folder_data["path"]) == (BASE_ID, str(hub.main))
    assert id_data["snapshots"] == {"path": snapshot_entry(BASE_ID, "main", hub.main), "adapter": None}
    assert without(id_data, "path", "snapshots") == without(folder_data, "path")
    assert id_data["files"] and all(f.startswith(f"{hub.main}{os.sep}") for f in id_data["files"])
    assert f"{hub.main}{os.sep}model.safetensors" in id_data["files"]  # the header read through the blob link

    folder_text, id_text = run(hub, "check", hub.main), run(hub, "check", BASE_ID)
    assert id_text.rc == folder_text.rc
    assert id_text.out.splitlines()[0] == f"tokenguard check {BASE_ID} (cached snapshot {hub.main})"
    assert folder_text.out.splitlines()[0] == f"tokenguard check {hub.main}"
    assert id_text.out.splitlines()[1:] == folder_text.out.splitlines()[1:]


def test_revision_picks_the_snapshot(hub: Hub) -> None:
    default = run(hub, "check", BASE_ID, "--format", "json")
    by_branch = run(hub, "check", BASE_ID, "--revision", "main", "--format", "json")
    assert (by_branch.rc, by_branch.out, by_branch.err) == (default.rc, default.out, "")

    by_commit = run(hub, "check", BASE_ID, "--revision", OLDER, "--format", "json")
    by_folder = run(hub, "check", hub.older, "--format", "json")
    assert (by_commit.rc, by_commit.err) == (by_folder.rc, "")
    data = by_commit.json()
    assert data["snapshots"]["path"] == snapshot_entry(BASE_ID, OLDER, hub.older)
    assert without(data, "path", "snapshots") == without(by_folder.json(), "path")
    assert data["findings"] != default.json()["findings"]  # really the other snapshot
    text = run(hub, "check", BASE_ID, "--revision", OLDER)
    assert text.out.splitlines()[0] == f"tokenguard check {BASE_ID} revision {OLDER} (cached snapshot {hub.older})"


# -- not cached: exit 2, one line: the id, the cache searched, the command that fetches it --------------------


def test_uncached_model_id_exits_2_naming_the_cache_and_the_command(hub: Hub) -> None:
    cli = hub_cli()
    assert (Path(sys.executable).parent / cli).exists() or shutil.which(cli)  # the command named is installed
    missing = run(hub, "check", UNCACHED_ID)
    assert (missing.rc, missing.out) == (2, "")
    assert missing.err == (
        f"tokenguard: error: {UNCACHED_ID}: checkpoint folder does not exist, and model {UNCACHED_ID} is not in the "
        f"Hugging Face cache {hub.cache} (from HF_HUB_CACHE); tokenguard never downloads, run: {cli} download {UNCACHED_ID}\n"
    )
    at_revision = run(hub, "check", UNCACHED_ID, "--revision", "v2")
    assert (at_revision.rc, at_revision.out) == (2, "")
    assert at_revision.err == (
        f"tokenguard: error: {UNCACHED_ID}: checkpoint folder does not exist, and model {UNCACHED_ID} (revision v2) is "
        f"not in the Hugging Face cache {hub.cache} (from HF_HUB_CACHE); tokenguard never downloads, run: "
        f"{cli} download {UNCACHED_ID} --revision v2\n"
    )


def test_uncached_revision_exits_2_listing_what_is_cached(hub: Hub) -> None:
    cli = hub_cli()
    for revision in ("v9", "f" * 40):  # a branch or tag no ref records, a commit with no snapshot
        missing = run(hub, "check", BASE_ID, "--revision", revision)
        assert (missing.rc, missing.out) == (2, "")
        assert missing.err == (
            f"tokenguard: error: {BASE_ID}: revision {revision} of model {BASE_ID} is not in the Hugging Face cache "
            f"{hub.cache} (from HF_HUB_CACHE; cached: main, {OLDER}); tokenguard never downloads, run: "
            f"{cli} download {BASE_ID} --revision {revision}\n"
        )


def test_hf_home_is_where_the_cache_is_without_hf_hub_cache(hub: Hub, tmp_path: Path) -> None:
    home = tmp_path / "hf-home"
    home.mkdir()
    missing = run(hub, "check", UNCACHED_ID, HF_HUB_CACHE=None, HF_HOME=str(home))
    assert missing.rc == 2
    assert f" is not in the Hugging Face cache {home / 'hub'} (from HF_HOME); " in missing.err
    (home / "hub").symlink_to(hub.cache, target_is_directory=True)
    found = run(hub, "check", BASE_ID, "--format", "json", HF_HUB_CACHE=None, HF_HOME=str(home))
    assert found.err == ""
    entry, expected = found.json()["snapshots"]["path"], snapshot_entry(BASE_ID, "main", hub.main)
    # the same snapshot (huggingface_hub < 1.0 keeps the HF_HOME/hub symlink in the path, later releases resolve it)
    assert Path(entry.pop("folder")).resolve() == Path(expected.pop("folder")).resolve()
    assert entry == expected


def test_no_offline_mode_and_no_network(hub: Hub) -> None:
    """HF_HUB_OFFLINE=0 and an endpoint nothing answers: lookups only read the disk (``run`` refuses sockets)."""
    for argv, found in [
        ((BASE_ID,), True),
        ((BASE_ID, "--revision", OLDER), True),
        ((UNCACHED_ID,), False),
        ((BASE_ID, "--revision", "v9"), False),
    ]:
        child = run(hub, "check", *argv, HF_HUB_OFFLINE="0", HF_ENDPOINT=UNROUTABLE)
        assert child.imported_hub
        assert child.rc in ({0, 1} if found else {2}), child.err


# -- adapters ----------------------------------------------------------------------------------------------------


def test_adapter_model_id(hub_with_adapter: Hub) -> None:
    hub = hub_with_adapter
    assert hub.adapter is not None
    by_folders = run(hub, "check", hub.main, "--adapter", hub.adapter, "--format", "json")
    by_ids = run(hub, "check", BASE_ID, "--adapter", ADAPTER_ID, "--format", "json")
    assert (by_ids.rc, by_ids.err) == (by_folders.rc, "")
    data, expected = by_ids.json(), by_folders.json()
    assert (data["path"], data["adapter"]) == (BASE_ID, ADAPTER_ID)
    assert data["snapshots"] == {
        "path": snapshot_entry(BASE_ID, "main", hub.main),
        "adapter": snapshot_entry(ADAPTER_ID, "main", hub.adapter),
    }
    assert without(data, "path", "adapter", "snapshots") == without(expected, "path", "adapter")
    base_alone = run(hub, "check", BASE_ID, "--format", "json").json()
    assert data["layout"]["tokenizer"]["pad"] is not None is base_alone["layout"]["tokenizer"]["pad"]  # the adapter's pad
    assert f"{hub.adapter}{os.sep}adapter_config.json" in data["files"]

    text = run(hub, "check", BASE_ID, "--adapter", ADAPTER_ID, "--adapter-revision", ADAPTER_MAIN)
    assert text.out.splitlines()[0] == (
        f"tokenguard check {BASE_ID} (cached snapshot {hub.main}) "
        f"+ adapter {ADAPTER_ID} revision {ADAPTER_MAIN} (cached snapshot {hub.adapter})"
    )
    mixed = run(hub, "check", hub.main, "--adapter", ADAPTER_ID, "--format", "json").json()  # a folder and an id
    assert mixed["snapshots"] == {"path": None, "adapter": snapshot_entry(ADAPTER_ID, "main", hub.adapter)}
    assert without(mixed, "path", "adapter", "snapshots") == without(expected, "path", "adapter")


def test_uncached_adapter_model_id_exits_2(hub: Hub) -> None:
    cli = hub_cli()
    missing = run(hub, "check", BASE_ID, "--adapter", "tokenguard-tests/no-such-lora")
    assert (missing.rc, missing.out) == (2, "")
    assert missing.err == (
        "tokenguard: error: tokenguard-tests/no-such-lora: adapter folder does not exist, and model "
        f"tokenguard-tests/no-such-lora is not in the Hugging Face cache {hub.cache} (from HF_HUB_CACHE); "
        f"tokenguard never downloads, run: {cli} download tokenguard-tests/no-such-lora\n"
    )
    wrong_revision = run(hub, "check", BASE_ID, "--adapter", ADAPTER_ID, "--adapter-revision", "v9")
    assert wrong_revision.rc == 2
    assert wrong_revision.err.startswith(f"tokenguard: error: {ADAPTER_ID}: revision v9 of model {ADAPTER_ID} is not in")


# -- folders first -----------------------------------------------------------------------------------------------


def test_existing_folder_named_like_a_model_id_wins(hub: Hub, tmp_path: Path) -> None:
    shutil.copytree(hub.older, tmp_path / BASE_ID)  # ./mistralai/Mistral-7B-Instruct-v0.3: the older files
    local = run(hub, "check", BASE_ID, "--format", "json", cwd=tmp_path)
    assert not local.imported_hub
    data = local.json()
    assert "snapshots" not in data
    assert data["files"] and all(f.startswith(f"{BASE_ID}/") for f in data["files"])
    expected = run(hub, "check", hub.older, "--format", "json").json()
    assert (data["findings"], data["layout"]) == (expected["findings"], expected["layout"])
    assert data["findings"] != run(hub, "check", BASE_ID, "--format", "json").json()["findings"]  # not refs/main
    assert run(hub, "check", BASE_ID, cwd=tmp_path).out.splitlines()[0] == f"tokenguard check {BASE_ID}"

    with_revision = run(hub, "check", BASE_ID, "--revision", "main", cwd=tmp_path)
    assert (with_revision.rc, with_revision.out) == (2, "")
    assert with_revision.err == (
        f"tokenguard: error: --revision main: {BASE_ID} is a local folder, and an existing path always wins over a "
        "model id; --revision only picks a snapshot of a model id in the Hugging Face cache\n"
    )


@pytest.mark.parametrize(
    ("argv", "message", "imports_hub"),
    [
        pytest.param(["{tmp}/nope"], "{tmp}/nope: checkpoint folder does not exist", False, id="absolute-path"),
        pytest.param(["no/such/folder"], "no/such/folder: checkpoint folder does not exist", False, id="two-slashes"),
        pytest.param(["bad..name"], "bad..name: checkpoint folder does not exist", True, id="invalid-repo-id"),
        pytest.param(
            ["{main}", "--adapter", "no/such/adapter"], "no/such/adapter: adapter folder does not exist", False, id="adapter"
        ),
    ],
)
def test_neither_a_folder_nor_a_model_id_keeps_the_missing_folder_error(
    hub: Hub, tmp_path: Path, argv: list[str], message: str, imports_hub: bool
) -> None:
    def fill(text: str) -> str:
        return text.format(tmp=tmp_path, main=hub.main)

    missing = run(hub, "check", *map(fill, argv), cwd=tmp_path)
    assert (missing.rc, missing.out, missing.err) == (2, "", f"tokenguard: error: {fill(message)}\n")
    assert missing.imported_hub is imports_hub  # huggingface_hub only judges what could be a model id


# -- the command line --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["check", "x", "--revision", "../../refs"], "argument --revision: not a branch, tag or commit hash: '../../refs'"),
        (["check", "x", "--revision", ""], "argument --revision: not a branch, tag or commit hash: ''"),
        (["check", "x", "--adapter-revision", "/etc"], "argument --adapter-revision: not a branch, tag or commit hash: '/etc'"),
    ],
)
def test_bad_revision_is_a_usage_error(capsys: pytest.CaptureFixture[str], argv: list[str], error: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"tokenguard check: error: {error}"


def test_adapter_revision_needs_an_adapter(hub: Hub) -> None:
    child = run(hub, "check", BASE_ID, "--adapter-revision", "main")
    assert (child.rc, child.out, child.err) == (2, "", "tokenguard: error: --adapter-revision needs --adapter (a model id)\n")
    assert not child.imported_hub
