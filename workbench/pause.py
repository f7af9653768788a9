"""Named points where a build may be held still, for the crash tests only.

`WORKBENCH_TEST_PAUSE_AT=<stage>` makes the process that reaches a `pause_point` whose stage
equals it (or starts with it) print `WORKBENCH_PAUSED <stage>` on stderr and wait there for
ever, so a test can SIGKILL it at exactly that point (tests/crash). Without the variable a pause
point does nothing. Stages:

  store:<artefact>/<part>   inside a slice group's transaction, rows written, built marks not yet
  store:sae/<sae_id>        inside an SAE catalogue's transaction, before its `saes` row
  publish:<name>            a folder filled under its temporary name, not yet renamed into place
  swap:<name>               an existing folder set aside, the new one not yet in its place
"""

from __future__ import annotations

import os
import sys
import time

PAUSE_ENV = "WORKBENCH_TEST_PAUSE_AT"


def pause_point(stage: str) -> None:
    """Hold the process still here when WORKBENCH_TEST_PAUSE_AT names this stage (or a prefix)."""
    wanted = os.environ.get(PAUSE_ENV)
    if not wanted or not stage.startswith(wanted):
        return
    sys.stderr.write(f"WORKBENCH_PAUSED {stage}\n")
    sys.stderr.flush()
    while True:  # until the test kills the process
        time.sleep(60)
