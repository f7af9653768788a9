"""CLI for the lab's shared edit library (workbench/edits/library.py), wired in by workbench/cli/main.py:

    library list [--all-models]                                  (entries, newest first)
    library publish SPEC.json [--payload P] [--scorecard C] [--note TEXT] [--owner ID]
    library show ID [--out SPEC.json]                            (details; --out writes spec + payload)
    library withdraw ID [--owner ID]

The author is `--owner ID` when given, else the OS user name as an owner token (characters other
than letters, digits, '-' and '_' become '-'). The app's users are their browser's or login's
owner id (the Edit library page shows yours): pass it as `--owner` to act as that author. The
command line is the server admin's, so `--owner` is trusted as given.
"""

from __future__ import annotations

import argparse
import getpass
import json
import re
from pathlib import Path
from typing import Any

from workbench.cli.common import UserError, load_bundle_for, settings_for

OWNER_HELP = "author id to act as (default: the OS user name; your id in the app is on the Edit library page)"


def add_parsers(sub: argparse._SubParsersAction) -> None:
    lib = sub.add_parser("library", help="the lab's shared edit library: list, publish, show, withdraw")
    lib_sub = lib.add_subparsers(dest="library_command", required=True)

    p = lib_sub.add_parser("list", help="published edits, newest first")
    p.add_argument("--all-models", action="store_true", help="every model's entries (default: the --model's)")
    p.set_defaults(func=cmd_list)

    p = lib_sub.add_parser("publish", help="publish a spec (and its payload) for the --model")
    p.add_argument("spec", help="an edit spec JSON (its payload is read from beside it, as the spec names it)")
    p.add_argument("--payload", help="the spec's .safetensors payload, when it is not beside the spec")
    p.add_argument("--scorecard", help="its scorecard JSON (the .scorecard.json `erase` writes)")
    p.add_argument("--note", default="", help="a line for the lab (default: the spec's notes)")
    p.add_argument("--owner", help=OWNER_HELP)
    p.set_defaults(func=cmd_publish)

    p = lib_sub.add_parser("show", help="one entry in full")
    p.add_argument("id")
    p.add_argument("--out", help="also write its spec JSON here (and its payload beside it) to apply or import")
    p.set_defaults(func=cmd_show)

    p = lib_sub.add_parser("withdraw", help="take your own entry out of the library")
    p.add_argument("id")
    p.add_argument("--owner", help=OWNER_HELP)
    p.set_defaults(func=cmd_withdraw)


def cli_owner(args: argparse.Namespace) -> str:
    """`--owner`, else the OS user name as an owner token."""
    from workbench.jobs.manager import check_owner

    if args.owner:
        return check_owner(args.owner)
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = "user"
    return check_owner(re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-_")[:80] or "user")


def _store(args: argparse.Namespace, write: bool) -> Any:
    """The store of the --cache; a missing store is an empty library for reading."""
    from workbench.store import open_store

    settings = settings_for(args)
    if not write and not settings.store_path.exists():
        return None
    return open_store(settings.store_path, read_only=not write)


def _one(store: Any, entry_id: str) -> Any:
    from workbench.edits import library

    found = library.entry(store, entry_id) if store is not None else None
    if found is None:
        raise UserError(f"There is no library entry {entry_id!r}; `python -m workbench library list` shows the ids.")
    return found


def cmd_list(args: argparse.Namespace) -> int:
    from workbench.edits import library
    from workbench.models import parse_source

    store = _store(args, write=False)
    model_id = None if args.all_models else parse_source(settings_for(args).model_source).model_id
    items = library.entries(store, model_id) if store is not None else []
    if store is not None:
        store.close()
    if not items:
        print("The library has no edits" + ("" if model_id is None else f" for {model_id} (--all-models: every model's)")
              + ". Publish one: python -m workbench library publish SPEC.json")
        return 0
    print(f"{'id':<13} {'tier':<28} {'score':>6}  {'published':<16}  {'author':<24} name")
    for e in items:
        score = "-" if e.score is None else f"{e.score:.3f}"
        published = f"{e.published_at:%Y-%m-%d %H:%M}" if e.published_at else ""
        print(f"{e.entry_id:<13} {e.tier[:28]:<28} {score:>6}  {published:<16}  {e.author[:24]:<24} {e.name}"
              + (f"   [{e.model_id}]" if model_id is None else ""))
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    from workbench.edits import library
    from workbench.edits.spec import EditSpec, SpecError, load_spec, unpack_payload
    from workbench.models.safety import refuse_pickle_file

    owner = cli_owner(args)
    path = Path(args.spec)
    try:
        refuse_pickle_file(path)
        if not path.exists():
            raise UserError(f"Spec file {path} does not exist.")
        if args.payload:
            spec = EditSpec.from_json(path.read_bytes(), what=f"The edit spec {path.name}")
            payload = unpack_payload(spec, Path(args.payload).read_bytes())
        else:
            spec, payload = load_spec(path)
        card = None
        if args.scorecard:
            card = library.ScoreSummary.from_dict(json.loads(Path(args.scorecard).read_text()))
    except (SpecError, ValueError, OSError) as err:
        raise UserError(str(err)) from err
    settings, bundle = load_bundle_for(args)
    store = _store(args, write=True)
    try:
        entry = library.publish(store, settings, owner, spec, payload, card, args.note, bundle=bundle)
    finally:
        store.close()
    print(f"published {entry.entry_id}: '{entry.name}' by {entry.author} for {entry.model_id}, "
          + (f"tier {entry.tier}, score {entry.score:.3f}" if entry.scorecard and entry.score is not None
             else "no scorecard") + (f"; payload {entry.payload_bytes:,} bytes" if entry.payload_path else ""))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from workbench.edits import library
    from workbench.edits.spec import save_spec

    store = _store(args, write=False)
    try:
        e = _one(store, args.id)
    finally:
        if store is not None:
            store.close()
    print(f"{e.name}  ({e.entry_id})")
    print(f"  model      {e.model_id} (weights {e.weights_sha256[:16]}...)")
    print(f"  author     {e.author}")
    if e.published_at:
        print(f"  published  {e.published_at:%Y-%m-%d %H:%M}")
    if e.note:
        print(f"  note       {e.note}")
    for i, line in enumerate(e.operations, 1):
        print(f"  op {i:<7} {line}")
    if e.payload_path:
        print(f"  payload    {e.payload_bytes:,} bytes, sha256 {str(e.payload_sha256)[:16]}...")
    card = e.scorecard
    if card is None:
        print("  scorecard  none")
    else:
        score = "-" if card.score is None else f"{card.score:.3f}"
        print(f"  scorecard  {card.concept}: tier {card.tier}, score {score}. {card.outcome}")
        for row in card.rows:
            after = row.get("after")
            print(f"    {row.get('metric', ''):<45} {'-' if after is None else f'{after:.3f}':>8}  (want {row.get('want')})")
        for verdict in card.verdicts:
            print(f"    {verdict}")
    if args.out:
        try:
            spec, payload = library.load(e)
            written = save_spec(spec, Path(args.out), payload=payload or None)
        except ValueError as err:
            raise UserError(str(err)) from err
        print(f"wrote {args.out}" + (f" and its payload {written.payload.file}" if written.payload else ""))
    return 0


def cmd_withdraw(args: argparse.Namespace) -> int:
    from workbench.edits import library

    owner = cli_owner(args)
    store = _store(args, write=True)
    try:
        gone = library.withdraw(store, args.id, owner)
    except PermissionError as err:
        raise UserError(str(err)) from err
    finally:
        store.close()
    print(f"withdrew {gone.entry_id}: '{gone.name}'")
    return 0
