"""Machine settings, read from the environment (``RETOUCH_*``) once per process."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import BeforeValidator, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_home() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "retouch"


class Settings(BaseSettings):
    """Where retouch keeps things and how hard it works. Every field is ``RETOUCH_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="RETOUCH_", extra="ignore")

    home: Path = Field(
        default_factory=_default_home, description="Base folder for models and workspace"
    )
    model_dir: Path | None = Field(
        None, description="Folder holding model weights (default HOME/models)"
    )
    model_mirror: str | None = Field(
        None,
        description="fsspec URL of a folder mirroring the official weight files (for offline sites)",
    )
    offline: bool = Field(False, description="Never fetch weights from the official URLs")
    workspace: str | None = Field(
        None, description="Workspace for results and run records (default HOME/workspace)"
    )
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N")
    chunk_size: int | None = Field(
        None,
        ge=1,
        le=10_000,
        description="Images per mapped task; empty = automatic (see max_chunks)",
    )
    max_chunks: int = Field(
        25,
        ge=1,
        le=1000,
        description="Automatic chunking: at most this many tasks per phase (Prefect costs ~20 ms "
        "per task run and its server stalls past ~1000 of them), one image per task when fewer",
    )
    workers: int = Field(
        2, ge=1, le=64, description="Concurrent chunk tasks (threads) per flow run"
    )
    processes: int = Field(
        0,
        ge=0,
        le=64,
        description="Worker processes for the per-image work of large chunks of recipes "
        "without models (bound by one interpreter lock in the flow's process); 0 = one per "
        "CPU core, 1 = none",
    )
    pixel_limit: int = Field(
        100_000_000,
        ge=1,
        description="Images declaring more pixels than this are rejected before decoding",
    )
    max_file_bytes: int = Field(
        500 * 1024 * 1024, ge=1, description="Inputs larger than this are rejected"
    )
    max_video_bytes: int = Field(
        64 * 1024**3,
        ge=1,
        description="Videos larger than this are rejected (they are streamed from disk, "
        "never held in memory; a copy is made of one that is not on a local disk)",
    )
    gpu_concurrency: str = Field(
        "retouch-gpu", description="Name of the Prefect global concurrency limit guarding the GPU"
    )
    gpu_memory_fraction: float = Field(
        0.8,
        gt=0,
        le=1,
        description="Share of the GPU's memory this process's tensors may reach: tile and batch "
        "sizes are cut so that one more forward pass keeps what torch holds under it (the rest "
        "stays for other processes on the card, the CUDA context and fragmentation); no effect "
        "on CPU",
    )
    cache_days: float = Field(
        7.0, gt=0, description="How long Prefect's task cache entries stay valid"
    )
    storage_retries: int = Field(3, ge=0, le=20, description="Retries for storage reads and writes")
    remote_timeout_s: float = Field(
        10.0,
        gt=0,
        le=600,
        description="Seconds an http(s):// server may take to accept a connection or to send "
        "the next part of an answer before the attempt fails (and is retried, "
        "storage_retries): a server that never answers fails an image after about "
        "(storage_retries + 1) x this, 43 s by default",
    )
    delivery_stall_s: float = Field(
        10.0,
        gt=0,
        description="Report a write to the destination still unfinished after this many "
        "seconds (and again each time as long again)",
    )
    follow_symlinks: bool = Field(
        False, description="Include symlinks in local source folders that point outside them"
    )
    cache_max_bytes: int | None = Field(
        None,
        ge=0,
        description="Bound on the workspace's result cache in bytes: after each run the least "
        "recently used results beyond it are evicted (never an image's current version); "
        "empty = unbounded",
    )
    metrics_port: Annotated[int, BeforeValidator(lambda v: v or 0)] = Field(
        0,
        ge=0,
        le=65535,
        description="Port of the Prometheus /metrics of `retouch serve` (its --metrics-port "
        "overrides it); 0 or empty: off. `retouch web` serves /metrics on its own port",
    )
    server_idle_s: float = Field(
        900.0,
        ge=0,
        description="Without PREFECT_API_URL, commands share a Prefect server started in the "
        "background, which stops after this many seconds without a request, a command using "
        "it or a running flow run; 0: each command starts its own and stops it at exit",
    )
    # -- retouch web ------------------------------------------------------------------------
    web_token: str | None = Field(
        None,
        description="Token every /api request of `retouch web` must carry (Authorization: Bearer "
        "or ?token=); required when it listens beyond loopback",
    )
    web_max_files: int = Field(
        1000, ge=1, le=100_000, description="Most images (masks included) one upload may hold"
    )
    web_max_file_bytes: int = Field(
        100 * 1024 * 1024, ge=1, description="Largest single uploaded file in bytes"
    )
    web_max_batch_bytes: int = Field(
        2 * 1024 * 1024 * 1024, ge=1, description="Largest total upload of one batch in bytes"
    )
    web_max_running: int = Field(
        1,
        ge=0,
        le=64,
        description="Batches run at once by `retouch web` (the rest wait in a queue); 0 accepts "
        "batches but starts none",
    )
    web_source_roots: list[Path] = Field(
        default_factory=list,
        description="Local folders that POST /api/batches/from-uris may read (JSON list); empty: "
        "only remote URLs (s3://...) are accepted",
    )

    diffusion_checkpoint: str | None = Field(
        None,
        description="Stable Diffusion checkpoint used by restyle's diffusion method when a "
        "recipe names none: a local .safetensors file or diffusers folder",
    )

    def resolved_model_dir(self) -> Path:
        return Path(self.model_dir) if self.model_dir else self.home / "models"

    def resolved_workspace(self) -> str:
        return self.workspace or str(self.home / "workspace")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def reload_settings() -> Settings:
    """Re-read the environment (tests and the CLI call this after changing variables)."""
    get_settings.cache_clear()
    return get_settings()
