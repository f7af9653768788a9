"""Progress reporting shared by the CLI (tqdm bars) and the app's background jobs (a JSON file
the page polls), so long builds report the same way everywhere."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Protocol

from workbench import atomic


class Progress(Protocol):
    def stage(self, name: str, total: int | None = None, unit: str = "it") -> None: ...
    def advance(self, n: int = 1, **info: Any) -> None: ...
    def message(self, text: str) -> None: ...
    def close(self) -> None: ...


class NullProgress:
    def stage(self, name: str, total: int | None = None, unit: str = "it") -> None:
        pass

    def advance(self, n: int = 1, **info: Any) -> None:
        pass

    def message(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


NULL_PROGRESS = NullProgress()  # it holds no state: the one default of every `progress` argument


class TqdmProgress:
    """One tqdm bar per stage; messages go through tqdm.write so bars stay intact."""

    def __init__(self) -> None:
        self._bar: Any = None

    def stage(self, name: str, total: int | None = None, unit: str = "it") -> None:
        from tqdm.auto import tqdm

        self.close()
        self._bar = tqdm(total=total, desc=name, unit=unit, unit_scale=unit == "tok", dynamic_ncols=True)

    def advance(self, n: int = 1, **info: Any) -> None:
        if self._bar is not None:
            self._bar.update(n)
            if info:
                self._bar.set_postfix({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in info.items()})

    def message(self, text: str) -> None:
        from tqdm.auto import tqdm

        tqdm.write(text)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class FileProgress:
    """Writes {stage, done, total, info, messages, updated} to a JSON file atomically, at most
    a few times a second, so a page (or a reloaded page) can show live progress."""

    def __init__(self, path: Path, min_interval_s: float = 0.3) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.state: dict[str, Any] = {"stage": "", "done": 0, "total": None, "unit": "it",
                                      "info": {}, "messages": [], "started": time.time(),
                                      "stage_started": time.time()}
        self._min = min_interval_s
        self._last = 0.0
        self._flush(force=True)

    def stage(self, name: str, total: int | None = None, unit: str = "it") -> None:
        self.state.update(stage=name, done=0, total=total, unit=unit, info={}, stage_started=time.time())
        self._flush(force=True)

    def advance(self, n: int = 1, **info: Any) -> None:
        self.state["done"] += n
        if info:
            self.state["info"] = {k: (float(v) if isinstance(v, int | float) else str(v)) for k, v in info.items()}
        self._flush()

    def message(self, text: str) -> None:
        self._remember(text)
        self._flush(force=True)

    def _remember(self, text: str) -> None:
        """Keep `text` among the last 50 messages."""
        self.state["messages"] = (self.state["messages"] + [text])[-50:]

    def close(self) -> None:
        self._flush(force=True)

    def _flush(self, force: bool = False) -> None:
        now = time.time()
        if not force and now - self._last < self._min:
            return
        self._last = now
        self.state["updated"] = now
        atomic.write_text(self.path, json.dumps(self.state), durable=False)  # a reader never sees half a file


def read_progress(path: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(Path(path).read_text())
        return data
    except (FileNotFoundError, json.JSONDecodeError):
        return None
