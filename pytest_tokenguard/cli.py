"""``tokenguard check PATH [--adapter PATH] [--format text|json] [--strict]``.

Exit status: 0 clean, 1 failing findings, 2 usage error or unreadable input. Imports neither
torch nor transformers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
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
        "path", type=_folder_argument, help="checkpoint folder (config.json, tokenizer files, generation_config.json)"
    )
    check.add_argument("--adapter", type=_folder_argument, help="peft adapter folder; its tokenizer/config files take precedence")
    check.add_argument("--format", choices=("text", "json"), default="text")
    check.add_argument("--strict", action="store_true", help="warnings fail too")
    commands.add_parser("codes", help="list every code: runtime (TG1xx, fault or notice) and static (TG2xx)")
    catalog = commands.add_parser(
        "catalog",
        help="the runtime codes (TG1xx) whose message exists in the installed transformers",
        description="Entries active for the installed transformers (or --transformers-version), with their "
        "regexes and fix hints. Reads the installed version from package metadata; imports nothing.",
    )
    catalog.add_argument("--transformers-version", metavar="X.Y.Z", help="instead of the installed version")
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
    entries = list(ENTRIES) if args.all else active_entries(version)
    rows = [
        {
            "code": e.code,
            "title": e.title,
            "channel": e.channel,
            "first": e.first,
            "last": e.last,
            "active": bool(version) and exists_in(e, version),
            "pattern": e.pattern,
            "fix": e.fix,
            "severity": SEVERITIES[e.code][0],
            "reason": SEVERITIES[e.code][1],
        }
        for e in entries
    ]
    if args.format == "json":
        _print(json.dumps({SCHEMA_VERSION_KEY: JSON_SCHEMA, "transformers": version, "entries": rows}, indent=2, sort_keys=True))
        return EXIT_CLEAN
    heading = "every entry" if args.all else f"entries active in transformers {version}"
    lines = [f"tokenguard catalog: {heading} ({len(rows)})"]
    for row in rows:
        span = f"{row['first']}-{row['last'] or 'current'}"
        lines.append(f"\n{row['code']}  {row['title']}  [{row['severity']}, {row['channel']}, transformers {span}]")
        lines.append(f"  why:   {row['reason']}")
        lines.append(f"  regex: {row['pattern']}")
        lines.append(f"  fix:   {row['fix']}")
    _print("\n".join(lines))
    return EXIT_CLEAN


def _check(args: argparse.Namespace) -> int:
    try:
        folder = read_folder(args.path, args.adapter)
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
        _print(json.dumps(data, indent=2, sort_keys=True))
    else:
        target = args.path + (f" + adapter {args.adapter}" if args.adapter else "")
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
    """Console-script entry: ``main()``'s status (a closed pipe on stdout does not change it)."""
    sys.exit(main())


if __name__ == "__main__":
    run()
