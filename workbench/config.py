"""One settings object for paths, model source and limits, overridable from the environment.

Every page, CLI command and library function takes its paths and limits from `Settings`, so a
lab server can move the cache or tighten limits with environment variables alone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Limits:
    """Bounds on user input and on work done for one request."""

    max_new_tokens: int = 64
    max_prompt_chars: int = 4000
    max_upload_bytes: int = 5 * 1024 * 1024
    generation_timeout_s: float = 120.0
    max_prompts_per_preview: int = 8


@dataclass(frozen=True)
class Settings:
    """Paths and defaults. `from_env` reads WORKBENCH_* variables."""

    cache_dir: Path = REPO_ROOT / "cache"
    model_source: str = "embedded"
    limits: Limits = field(default_factory=Limits)
    torch_threads: int | None = None
    device: str = "auto"  # 'cpu' | 'cuda' | 'auto' (CUDA when torch sees a GPU)
    dtype: str = "float32"  # 'float32' | 'bfloat16': the dtype the weights are held in

    @property
    def store_path(self) -> Path:
        return self.cache_dir / "workbench.duckdb"

    @property
    def models_dir(self) -> Path:
        return self.cache_dir / "models"

    @property
    def saes_dir(self) -> Path:
        return self.cache_dir / "saes"

    @property
    def jobs_dir(self) -> Path:
        return self.cache_dir / "jobs"

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        env = os.environ
        kwargs: dict[str, object] = {}
        if "WORKBENCH_CACHE" in env:
            kwargs["cache_dir"] = Path(env["WORKBENCH_CACHE"]).expanduser().resolve()
        if "WORKBENCH_MODEL" in env:
            kwargs["model_source"] = env["WORKBENCH_MODEL"]
        if "WORKBENCH_DEVICE" in env:
            kwargs["device"] = env["WORKBENCH_DEVICE"]
        if "WORKBENCH_DTYPE" in env:
            kwargs["dtype"] = env["WORKBENCH_DTYPE"]
        limits = Limits(
            max_new_tokens=int(env.get("WORKBENCH_MAX_NEW_TOKENS", Limits.max_new_tokens)),
            max_prompt_chars=int(env.get("WORKBENCH_MAX_PROMPT_CHARS", Limits.max_prompt_chars)),
            max_upload_bytes=int(env.get("WORKBENCH_MAX_UPLOAD_BYTES", Limits.max_upload_bytes)),
            generation_timeout_s=float(
                env.get("WORKBENCH_GENERATION_TIMEOUT_S", Limits.generation_timeout_s)
            ),
        )
        kwargs["limits"] = limits
        kwargs.update(overrides)
        return cls(**kwargs)  # type: ignore[arg-type]
