"""`cadencia world`: export, import and inspect the city doc kept in the data directory."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

NAME = "world"
HELP = "export, import or inspect the shared city (a Yjs-compatible CRDT doc)"
DESCRIPTION = (
    "The city is stored as signed edits in <data-dir>/world.sqlite3. 'export' writes it as "
    "one Yjs update (Y.applyUpdate reads it) or as its JSON view; 'import' merges a Yjs "
    "update as this node's player's own edit, refused if it touches what the player does "
    "not own; 'status' prints counts and the state vector."
)
MAX_IMPORT_BYTES = 64 * 1024 * 1024


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="world_command", metavar="ACTION", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", default=None, metavar="D",
                        help="data directory (default $CADENCIA_DATA_DIR or the user data dir)")
    common.add_argument("--json", action="store_true", help="print one JSON object")
    exp = sub.add_parser("export", parents=[common], help="write the city to FILE")
    exp.add_argument("--format", choices=("yjs", "json"), default="yjs",
                     help="yjs: one binary Yjs update (default); json: the JSON view")
    exp.add_argument("file", metavar="FILE", help="output file ('-' for stdout, json only)")
    imp = sub.add_parser("import", parents=[common],
                         help="merge a Yjs update FILE as this player's edit")
    imp.add_argument("file", metavar="FILE", help="a binary Yjs update (e.g. from export)")
    sub.add_parser("status", parents=[common], help="counts, state vector, stored edits")


def run(args: argparse.Namespace) -> int:
    from hive_core.base.identity import Identity
    from hive_core.base.paths import data_dir
    from world.model import City

    directory = data_dir(args.data_dir)
    city = City.open(directory, Identity.load_or_create(directory))
    try:
        if args.world_command == "export":
            return _export(city, args)
        if args.world_command == "import":
            return _import(city, args)
        return _status(city, args, directory)
    finally:
        city.close()


def _write(path: str, data: bytes) -> None:
    if path == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, target)


def _export(city: object, args: argparse.Namespace) -> int:
    from world.model import City, WorldError

    assert isinstance(city, City)
    if args.format == "yjs":
        if args.file == "-":
            raise WorldError("a Yjs export is binary: give a file name, not '-'")
        data = city.export_update()
    else:
        data = (json.dumps(city.to_json(), indent=1, sort_keys=True) + "\n").encode()
    _write(args.file, data)
    counts = city.counts()
    if args.json:
        print(json.dumps({"file": args.file, "format": args.format, "bytes": len(data),
                          "counts": counts}))
    elif args.file != "-":
        print(f"wrote {args.file}: {len(data)} bytes, {counts['buildings']} buildings "
              f"({args.format})", file=sys.stderr)
    return 0


def _import(city: object, args: argparse.Namespace) -> int:
    from world.model import City, WorldError

    assert isinstance(city, City)
    path = Path(args.file)
    size = path.stat().st_size
    if size > MAX_IMPORT_BYTES:
        raise WorldError(f"{path}: {size} bytes is more than the {MAX_IMPORT_BYTES} allowed")
    data = path.read_bytes()
    if data[:1] in (b"{", b"["):
        raise WorldError(f"{path}: looks like JSON; import takes a binary Yjs update "
                         "(export --format yjs)")
    if sys.stderr.isatty():  # progress for a person; scripts get the result or one error line
        print(f"checking {path.name} ({size} bytes) ...", file=sys.stderr, flush=True)
    changed = city.import_update(data)
    if args.json:
        print(json.dumps({"file": str(path), "changed_entries": changed,
                          "counts": city.counts()}))
    else:
        print(f"merged {changed} changed entries as player {city.player_id[:12]}")
    return 0


def _status(city: object, args: argparse.Namespace, directory: Path) -> int:
    from world.model import City

    assert isinstance(city, City)
    info = {
        "data_dir": str(directory),
        "player_id": city.player_id,
        "client_id": city.client_id,
        "counts": city.counts(),
        "state_vector": {str(k): v for k, v in sorted(city.state_vector().items())},
        "stored_edits": len(city.log),
        "balance_mc": city.balance_mc(),
    }
    if args.json:
        print(json.dumps(info))
    else:
        for key, value in info.items():
            print(f"{key}: {value}")
    return 0
