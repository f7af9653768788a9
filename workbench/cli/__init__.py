"""`python -m workbench ...`: the same library operations as the app, for scripts and CI.

`main.py` builds the parser and runs a command; `edits.py` (erase, apply, evaluate, exports),
`sae.py` (train, list, catalogue, search) and `library.py` (the lab's edit library) add their
subcommands; `common.py` holds what they share (UserError, settings from the global flags,
loading the model).
"""

from workbench.cli.common import UserError, load_bundle_for
from workbench.cli.main import build_parser, main

__all__ = ["UserError", "build_parser", "load_bundle_for", "main"]
