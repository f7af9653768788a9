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
class JobLimits:
    """How the app's background jobs share one server (workbench/jobs/manager.py)."""

    max_running: int | None = None  # users' jobs running at once; None: 1 on CPU, 2 on CUDA
    result_ttl_s: float = 3600.0  # a finished job's result is dropped this long after its first read (or its end)
    file_ttl_s: float = 7 * 86400.0  # job progress files older than this are deleted


@dataclass(frozen=True)
class ExportLimits:
    """How much of the server's disk users' exports may hold (workbench/exports/disk.py)."""

    quota_bytes: int = 4 * 1024**3  # per owner: about three float32 checkpoints of Gemma 3 270M
    ttl_s: float = 7 * 86400.0  # exports older than this are deleted


@dataclass(frozen=True)
class Settings:
    """Paths and defaults. `from_env` reads WORKBENCH_* variables."""

    cache_dir: Path = REPO_ROOT / "cache"
    model_source: str = "embedded"
    limits: Limits = field(default_factory=Limits)
    jobs: JobLimits = field(default_factory=JobLimits)
    exports: ExportLimits = field(default_factory=ExportLimits)
    torch_threads: int | None = None
    device: str = "auto"  # 'cpu' | 'cuda' | 'auto' (CUDA when torch sees a GPU)
    dtype: str = "float32"  # 'float32' | 'bfloat16': the dtype the weights are held in
    # What a browser may name on the server (workbench/server_paths.py; the CLI is not limited):
    sae_roots: tuple[Path, ...] = ()  # SAE folders beyond saes_dir: WORKBENCH_SAE_ROOTS
    model_roots: tuple[Path, ...] = ()  # model folders/GGUF files beyond models_dir: WORKBENCH_MODEL_ROOTS
    allow_hub: bool = False  # the app may download from the HF hub: WORKBENCH_ALLOW_HUB=1
    # Each distinct (model, device, dtype) the app serves is one more full model in memory, so
    # users may pick a model or placement other than the server's only when the admin allows it:
    user_models: bool = False  # WORKBENCH_USER_MODELS=1

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

    @property
    def exports_dir(self) -> Path:
        """Exported checkpoints and adapters, one folder per owner (jobs.export_dir)."""
        return self.cache_dir / "exports"

    @property
    def sae_folders(self) -> tuple[Path, ...]:
        """Where the app may load SAE folders from: the cache's SAE dir, then `sae_roots`."""
        return (self.saes_dir, *self.sae_roots)

    @property
    def model_folders(self) -> tuple[Path, ...]:
        """Where a model named in the browser may live: the cache's model dir, then `model_roots`."""
        return (self.models_dir, *self.model_roots)

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
        for key, name in (("sae_roots", "WORKBENCH_SAE_ROOTS"), ("model_roots", "WORKBENCH_MODEL_ROOTS")):
            kwargs[key] = tuple(Path(p).expanduser().resolve() for p in env.get(name, "").split(os.pathsep) if p.strip())
        kwargs["allow_hub"] = _flag(env.get("WORKBENCH_ALLOW_HUB", "0"))
        kwargs["user_models"] = _flag(env.get("WORKBENCH_USER_MODELS", "0"))
        limits = Limits(
            max_new_tokens=int(env.get("WORKBENCH_MAX_NEW_TOKENS", Limits.max_new_tokens)),
            max_prompt_chars=int(env.get("WORKBENCH_MAX_PROMPT_CHARS", Limits.max_prompt_chars)),
            max_upload_bytes=int(env.get("WORKBENCH_MAX_UPLOAD_BYTES", Limits.max_upload_bytes)),
            generation_timeout_s=float(
                env.get("WORKBENCH_GENERATION_TIMEOUT_S", Limits.generation_timeout_s)
            ),
        )
        kwargs["limits"] = limits
        max_running = env.get("WORKBENCH_MAX_RUNNING_JOBS", "").strip()
        kwargs["jobs"] = JobLimits(
            max_running=int(max_running) if max_running else None,
            result_ttl_s=float(env.get("WORKBENCH_JOB_RESULT_TTL_S", JobLimits.result_ttl_s)),
            file_ttl_s=float(env.get("WORKBENCH_JOB_FILE_TTL_S", JobLimits.file_ttl_s)),
        )
        kwargs["exports"] = ExportLimits(
            quota_bytes=int(float(env.get("WORKBENCH_USER_QUOTA_MB", ExportLimits.quota_bytes / 1024**2)) * 1024**2),
            ttl_s=float(env.get("WORKBENCH_EXPORT_TTL_S", ExportLimits.ttl_s)),
        )
        kwargs.update(overrides)
        return cls(**kwargs)  # type: ignore[arg-type]


def _flag(text: str) -> bool:
    """An on/off environment variable: 1, true, yes or on (any case) is on."""
    return text.strip().lower() in ("1", "true", "yes", "on")
