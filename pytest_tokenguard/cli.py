"""``tokenguard check PATH [--adapter PATH] [--revision REV] [--format text|json] [--strict]``.

PATH and ADAPTER are folders, or model ids (``Org/Name``) found in the local Hugging Face cache: a path that
exists is always the folder; only then is ``huggingface_hub`` imported, and it never downloads.

Exit status: 0 clean, 1 failing findings, 2 usage error or unreadable input. Imports neither
torch nor transformers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pytest_tokenguard.output import SCHEMA_VERSION_KEY
from pytest_tokenguard.static.checks import STATIC_CODES, check_layout
from pytest_tokenguard.static.folder import FolderError, read_folder

JSON_SCHEMA = 1
EXIT_CLEAN, EXIT_FINDINGS, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse exits 2 too; keep its usage line
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _folder_argument(value: str) -> str:
    if not value:  # Path("") is ".", which would silently check the current folder
        raise argparse.ArgumentTypeError("must not be empty")
    return value


def _revision_argument(value: str) -> str:
    # git refuses these in ref names; refs/<revision> is a path in the cache: nothing may climb out of it
    if not value or value.startswith("/") or "\\" in value or ".." in value:
        raise argparse.ArgumentTypeError(f"not a branch, tag or commit hash: {value!r}")
    return value


def _print(text: str, file: Any = None) -> None:
    """Print what the stream can encode (token strings and paths may not fit an ascii/cp1252 stdout); when the
    reader went away (``| head -1``) stop writing quietly: the exit status stays the command's own."""
    stream = file or sys.stdout
    encoding = getattr(stream, "encoding", None) or "utf-8"
    try:
        print(text.encode(encoding, "backslashreplace").decode(encoding), file=stream)
        stream.flush()
    except BrokenPipeError:
        # Python would report the pipe again when flushing at exit; point the stream at devnull first.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tokenguard", description="Check special tokens (bos/eos/pad) of Hugging Face checkpoints.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    check = commands.add_parser(
        "check",
        help="check a checkpoint folder (config, generation config, tokenizer, chat template)",
        description="Exit 0 when clean, 1 when there are failing findings, 2 on usage errors or unreadable input.",
    )
    check.add_argument(
        "path",
        type=_folder_argument,
        help="checkpoint folder (config.json, tokenizer files, generation_config.json), or a model id (Org/Name) "
        "whose snapshot is in the local Hugging Face cache (never downloaded; an existing folder wins)",
    )
    check.add_argument(
        "--adapter",
        type=_folder_argument,
        help="peft adapter folder or cached model id; its tokenizer/config files take precedence",
    )
    check.add_argument(
        "--revision",
        type=_revision_argument,
        metavar="REV",
        help="with a model id as PATH: the cached snapshot of this branch, tag or commit hash (default: main)",
    )
    check.add_argument(
        "--adapter-revision",
        type=_revision_argument,
        metavar="REV",
        help="the same for a model id as --adapter",
    )
    check.add_argument("--format", choices=("text", "json"), default="text")
    check.add_argument("--strict", action="store_true", help="warnings fail too")
    commands.add_parser("codes", help="list every code: runtime (TG1xx, fault or notice) and static (TG2xx)")
    catalog = commands.add_parser(
        "catalog",
        help="the runtime codes (TG1xx) whose message exists in the installed transformers and trl",
        description="Entries active for the installed transformers and trl (or --transformers-version / "
        "--trl-version), with their regexes and fix hints. Reads the installed versions from package metadata; "
        "imports nothing.",
    )
    catalog.add_argument("--transformers-version", metavar="X.Y.Z", help="instead of the installed version")
    catalog.add_argument("--trl-version", metavar="X.Y.Z", help="instead of the installed trl (trl's own messages)")
    catalog.add_argument("--all", action="store_true", help="every entry, with the versions it exists in")
    catalog.add_argument("--format", choices=("text", "json"), default="text")
    return parser


def _catalog(args: argparse.Namespace) -> int:
    from pytest_tokenguard import versions
    from pytest_tokenguard.guard.catalog import ENTRIES, SEVERITIES, active_entries, exists_in

    version = args.transformers_version
    if version is None:
        version = versions.installed_text("transformers")
        if version is None and not args.all:
            print("tokenguard: error: transformers is not installed; pass --transformers-version or --all", file=sys.stderr)
            return EXIT_USAGE
    else:
        try:
            versions.parse(version)
        except ValueError:
            print(f"tokenguard: error: --transformers-version {version!r} is not a version; write e.g. 4.57.6", file=sys.stderr)
            return EXIT_USAGE
    trl = args.trl_version if args.trl_version is not None else versions.installed_text("trl")
    if args.trl_version is not None:
        try:
            versions.parse(args.trl_version)
        except ValueError:
            print(f"tokenguard: error: --trl-version {args.trl_version!r} is not a version; write e.g. 1.16.0", file=sys.stderr)
            return EXIT_USAGE
    # no trl installed (or asked for): its entries are not active; "0" sorts before every trl release
    trl_or_none = trl if trl is not None else "0"
    entries = list(ENTRIES) if args.all else active_entries(version, trl_or_none)
    rows = [
        {
            "code": e.code,
            "title": e.title,
            "channel": e.channel,
            "library": e.library,
            "first": e.first,
            "last": e.last,
            "active": bool(version) and exists_in(e, version, trl_or_none),
            "pattern": e.pattern,
            "fix": e.fix,
            "severity": SEVERITIES[e.code][0],
            "reason": SEVERITIES[e.code][1],
        }
        for e in entries
    ]
    if args.format == "json":
        data = {SCHEMA_VERSION_KEY: JSON_SCHEMA, "transformers": version, "trl": trl, "entries": rows}
        _print(json.dumps(data, indent=2, sort_keys=True))
        return EXIT_CLEAN
    heading = "every entry" if args.all else f"entries active in transformers {version}, trl {trl or 'not installed'}"
    lines = [f"tokenguard catalog: {heading} ({len(rows)})"]
    for row in rows:
        span = f"{row['first']}-{row['last'] or 'current'}"
        lines.append(f"\n{row['code']}  {row['title']}  [{row['severity']}, {row['channel']}, {row['library']} {span}]")
        lines.append(f"  why:   {row['reason']}")
        lines.append(f"  regex: {row['pattern']}")
        lines.append(f"  fix:   {row['fix']}")
    _print("\n".join(lines))
    return EXIT_CLEAN


@dataclass
class Snapshot:
    """A model id resolved to its snapshot folder in the local Hugging Face cache."""

    repo_id: str
    revision: str
    folder: str

    def to_dict(self) -> dict[str, str]:
        commit = os.path.basename(os.path.normpath(self.folder))  # snapshots/<commit hash>
        return {"repo_id": self.repo_id, "revision": self.revision, "commit": commit, "folder": self.folder}

    def __str__(self) -> str:
        revision = "" if self.revision == "main" else f" revision {self.revision}"
        return f"{self.repo_id}{revision} (cached snapshot {self.folder})"


def _maybe_repo_id(argument: str) -> bool:
    """Whether ``argument`` (no existing path) is a model id; ``huggingface_hub`` decides, but what cannot be
    one (an absolute path, more than one ``/``) is told apart without importing it."""
    if os.path.isabs(argument) or argument.count("/") > 1 or "\\" in argument:
        return False
    try:
        # documented in huggingface_hub.utils from 0.23 to 2.x; not re-exported there for mypy
        from huggingface_hub.utils import HFValidationError, validate_repo_id  # type: ignore[attr-defined]
    except ImportError:  # transformers needs it; without it there are only folders
        return False
    try:
        validate_repo_id(argument)
    except HFValidationError:
        return False
    return True


def _hub_cli() -> str:
    """The command line the installed huggingface_hub provides: ``hf`` (0.34 and later), ``huggingface-cli`` before."""
    from importlib import metadata

    try:
        names = {e.name for e in metadata.distribution("huggingface_hub").entry_points if e.group == "console_scripts"}
    except metadata.PackageNotFoundError:
        names = set()
    return "huggingface-cli" if "huggingface-cli" in names and "hf" not in names else "hf"


def _cache_origin() -> str:
    """Which setting chose the cache folder, in huggingface_hub's order."""
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        if os.environ.get(name):
            return f"from {name}"
    return "the default; set HF_HUB_CACHE or HF_HOME to search another"


def _cached_revisions(storage: str, limit: int = 5) -> list[str]:
    """Names under refs/ (branches, tags, refs/pr/N), then snapshot commits no ref names."""
    refs_dir, named, commits = os.path.join(storage, "refs"), [], set()
    for root, _dirs, files in os.walk(refs_dir):
        for name in files:
            path = os.path.join(root, name)
            named.append(os.path.relpath(path, refs_dir).replace(os.sep, "/"))
            try:
                with open(path, encoding="utf-8") as handle:
                    commits.add(handle.read().strip())
            except (OSError, UnicodeDecodeError):
                pass
    try:
        snapshots = sorted(os.listdir(os.path.join(storage, "snapshots")))
    except OSError:
        snapshots = []
    found = sorted(named) + [commit for commit in snapshots if commit not in commits]
    return found[:limit] + ([f"... ({len(found) - limit} more)"] if len(found) > limit else [])


def _snapshot(repo_id: str, revision: str | None, what: str) -> Snapshot:
    """The cached snapshot folder of ``repo_id`` at ``revision``, offline (``local_files_only``: never a request),
    or a :class:`FolderError` saying what is not cached, where it looked and what to run."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.file_download import repo_folder_name
    from huggingface_hub.utils import LocalEntryNotFoundError  # type: ignore[attr-defined]

    cache = constants.HF_HUB_CACHE
    wanted = revision or constants.DEFAULT_REVISION
    try:
        folder = snapshot_download(repo_id, revision=revision, local_files_only=True)
    except LocalEntryNotFoundError as exc:
        command = f"{_hub_cli()} download {repo_id}" + (f" --revision {revision}" if revision else "")
        advice = f"tokenguard never downloads, run: {command}"
        if type(exc).__name__ == "IncompleteSnapshotError":  # huggingface_hub knows the snapshot lacks files
            raise FolderError(f"{repo_id}: {str(exc).splitlines()[0]} ({advice})") from None
        cached = _cached_revisions(os.path.join(cache, repo_folder_name(repo_id=repo_id, repo_type="model")))
        if cached:
            raise FolderError(
                f"{repo_id}: revision {wanted} of model {repo_id} is not in the Hugging Face cache {cache} "
                f"({_cache_origin()}; cached: {', '.join(cached)}); {advice}"
            ) from None
        at = f" (revision {revision})" if revision else ""
        raise FolderError(
            f"{repo_id}: {what} folder does not exist, and model {repo_id}{at} is not in the Hugging Face cache "
            f"{cache} ({_cache_origin()}); {advice}"
        ) from None
    except OSError as exc:
        raise FolderError(f"{repo_id}: cannot read the Hugging Face cache {cache} ({exc.strerror or exc})") from None
    return Snapshot(repo_id, wanted, str(folder))


def locate(argument: str, revision: str | None, what: str, option: str) -> Snapshot | None:
    """The cached snapshot that PATH (``what="checkpoint"``) or ``--adapter`` names, or None to read the argument
    as a folder: it exists on disk (always the folder), or it is no model id (the reader says what is wrong)."""
    if os.path.lexists(argument):
        if revision is not None:
            raise FolderError(
                f"{option} {revision}: {argument} is a local folder, and an existing path always wins over a model id; "
                f"{option} only picks a snapshot of a model id in the Hugging Face cache"
            )
        return None
    if not _maybe_repo_id(argument):
        return None
    return _snapshot(argument, revision, what)


def _check(args: argparse.Namespace) -> int:
    try:
        if args.adapter_revision is not None and args.adapter is None:
            raise FolderError("--adapter-revision needs --adapter (a model id)")
        base = locate(args.path, args.revision, "checkpoint", "--revision")
        adapter = locate(args.adapter, args.adapter_revision, "adapter", "--adapter-revision") if args.adapter else None
        folder = read_folder(base.folder if base else args.path, adapter.folder if adapter else args.adapter)
    except FolderError as exc:
        print(f"tokenguard: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    report = check_layout(folder.layout)
    failing = report.failing(strict=args.strict)
    status = EXIT_FINDINGS if failing else EXIT_CLEAN
    if args.format == "json":
        data = {
            SCHEMA_VERSION_KEY: JSON_SCHEMA,
            "path": args.path,
            "adapter": args.adapter,
            "strict": args.strict,
            "exit_code": status,
            "files": folder.files,
            **report.to_dict(),
        }
        if base or adapter:  # model ids: what was read, and from which commit
            data["snapshots"] = {"path": base.to_dict() if base else None, "adapter": adapter.to_dict() if adapter else None}
        _print(json.dumps(data, indent=2, sort_keys=True))
    else:
        target = str(base or args.path) + (f" + adapter {adapter or args.adapter}" if args.adapter else "")
        verdict = "FAIL" if failing else "ok"
        _print(
            f"tokenguard check {target}\n{report}\n\n{verdict}: {len(report.errors)} error(s), "
            f"{len(report.warnings)} warning(s)" + (" (strict: warnings fail)" if args.strict else "")
        )
    return status


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "catalog":
        return _catalog(args)
    if args.command == "codes":
        from pytest_tokenguard.guard.catalog import BY_CODE, FALLBACK_CODE, FALLBACK_TITLE, SEVERITIES

        lines = [f"{FALLBACK_CODE}  {SEVERITIES[FALLBACK_CODE][0]:<15}  {FALLBACK_TITLE}"]
        lines += [f"{code}  {SEVERITIES[code][0]:<15}  {entry.title}" for code, entry in sorted(BY_CODE.items())]
        lines += [f"{code.code}  {code.severity:<15}  {code.title}" for code in STATIC_CODES.values()]
        _print("\n".join(lines))
        return EXIT_CLEAN
    return _check(args)


def run() -> None:
    """Console-script entry: ``main()``'s status (a closed pipe on stdout does not change it).

    Leaves through ``os._exit`` once the output is flushed, as mypy does: tearing down the interpreter (the
    modules, a tokenizer.json of tens of MB) costs several ms of a command that takes about 90, and nothing of
    ours runs at exit."""
    status = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, ValueError):  # a reader that went away, a stream closed by the caller
            pass
    os._exit(status)


if __name__ == "__main__":
    run()
