"""Where the built dev benchmark lives and how to load it."""

from __future__ import annotations

from pathlib import Path

from workbench.benchmark.schema import DevBench

HERE = Path(__file__).resolve().parent
CANDIDATES = HERE / "candidates.json"
DEVBENCH = HERE / "devbench.json"


def load_devbench(path: Path = DEVBENCH) -> DevBench:
    """Load and validate the dev benchmark file (unknown keys are errors)."""
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; build it with `python -m workbench.benchmark.build`.")
    return DevBench.model_validate_json(path.read_text(encoding="utf-8"))
