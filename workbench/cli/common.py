"""What every subcommand module shares: the user-facing error, settings from the global flags,
and loading the model they name. Subcommand modules import this, never `cli.main`, so the CLI
has no import cycle."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from workbench.config import Settings

if TYPE_CHECKING:
    from workbench.models import ModelBundle


class UserError(Exception):
    """A problem with the user's input or environment, shown without a traceback."""


def settings_for(args: argparse.Namespace) -> Settings:
    """Settings from the environment, overridden by the global --cache, --model, --device and
    --dtype flags."""
    overrides: dict[str, object] = {}
    if getattr(args, "cache", None):
        overrides["cache_dir"] = Path(args.cache).expanduser().resolve()
    if getattr(args, "model", None):
        overrides["model_source"] = args.model
    if getattr(args, "device", None):
        overrides["device"] = args.device
    if getattr(args, "dtype", None):
        overrides["dtype"] = args.dtype
    return Settings.from_env(**overrides)


def parse_layers(text: str | None) -> list[int] | None:
    """'6', '2-8', '0,3,6' or 'all' -> list of layers (None = all)."""
    if text is None or text == "all":
        return None
    layers: list[int] = []
    try:
        for part in text.split(","):
            if "-" in part:
                lo, hi = part.split("-")
                layers += list(range(int(lo), int(hi) + 1))
            else:
                layers.append(int(part))
    except ValueError as err:
        raise UserError(f"--layers {text!r} is not like '6', '2-8', '0,3,6' or 'all'.") from err
    return layers


def load_bundle_for(args: argparse.Namespace) -> tuple[Settings, ModelBundle]:
    """The settings and the loaded model the flags name, with load progress on stderr."""
    from workbench.models import load_bundle, parse_source

    settings = settings_for(args)
    source = parse_source(settings.model_source)
    print(f"Loading {source.describe()} ...", file=sys.stderr)
    # a CLI process serves this one model: the process-wide speed and memory settings (models/process.py)
    return settings, load_bundle(source, settings, progress=lambda m: print(m, file=sys.stderr),
                                 tune_process=True)
