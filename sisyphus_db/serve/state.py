"""What the server keeps between requests: the database, the models, their embedders and indexes.

Everything a search needs is loaded once; what can change while the server runs (models
stored by an ingest, indexes rebuilt or updated) is re-read at most once per `ttl_s`, never
per request.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sisyphus_db.config import Settings
from sisyphus_db.db.database import Database
from sisyphus_db.errors import InputError, ModelError
from sisyphus_db.serve.auth import Tokens
from sisyphus_db.serve.embedding import BatchedEmbedder, EmbedBatcher
from sisyphus_db.serve.indexes import IndexCache, LoadedIndex
from sisyphus_db.store.registry import StoredModel, stored_models

logger = logging.getLogger(__name__)

DEFAULT_MAX_UPLOAD_MB = 20.0
# Requests handled at once: twice the cores, at least 4. More threads only fight over the GIL
# and the cores (measured on 2 cores: 8 threads 180 searches/s, 2-4 threads 230-290).
DEFAULT_THREADS = max(4, 2 * (os.cpu_count() or 1))


@dataclass(frozen=True)
class ServeConfig:
    settings: Settings
    host: str = "127.0.0.1"
    port: int = 8000
    tokens: Tokens | None = None
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB
    threads: int = DEFAULT_THREADS
    model: str | None = None  # the default model of searches that name none
    device: str | None = None  # where query images are embedded (default: the settings' device)
    registry_ttl_s: float = 1.0
    preload: bool = True  # load embedders and indexes at start-up, not on the first search
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * (1 << 20))


class ServerState:
    def __init__(self, config: ServeConfig, db: Database, durable_db: Database | None = None) -> None:
        self.config = config
        self.db = db  # searches and the runs they store (commits need not wait for the disk)
        self.durable_db = durable_db or db  # labels: every commit is on disk before the answer
        self.indexes = IndexCache(db, config.registry_ttl_s)
        self.batcher = EmbedBatcher()  # one forward pass at a time, concurrent query images batched
        self._models: list[StoredModel] = []
        self._models_at = float("-inf")
        self._models_lock = threading.Lock()
        self.started_at = time.time()

    @property
    def home(self) -> Path:
        return self.db.settings.home

    @property
    def thumbnail_dir(self) -> Path:
        return self.home / "thumbnails"

    def models(self) -> list[StoredModel]:
        if time.monotonic() - self._models_at >= self.config.registry_ttl_s:
            with self._models_lock:
                if time.monotonic() - self._models_at >= self.config.registry_ttl_s:
                    self._models = stored_models(self.db)
                    self._models_at = time.monotonic()
        return self._models

    def model(self, name: str | None) -> StoredModel:
        """The model named, or the server's default, or the only one stored."""
        models = self.models()
        wanted = name or self.config.model
        if wanted is not None:
            for model in models:
                if model.name == wanted:
                    return model
            for model in models:  # the default pooling suffix may be spelt out or left off
                if model.name.split("@")[0] == wanted.split("@")[0] and "@" not in model.name + wanted:
                    return model
            known = ", ".join(m.name for m in models) or "none yet: run `sisyphus ingest` first"
            raise InputError(f"no vectors for model {wanted!r} in the database (models: {known})")
        if not models:
            raise InputError("the database holds no vectors yet: run `sisyphus ingest` first")
        if len(models) > 1:
            raise InputError(f"several models are stored ({', '.join(m.name for m in models)}): "
                             "choose one with `model` (or start the server with --model)")
        return models[0]

    def default_model_name(self) -> str | None:
        try:
            return self.model(None).name
        except InputError:
            return None

    def index(self, model: StoredModel) -> LoadedIndex:
        return self.indexes.get(model)

    def embedder(self, model: StoredModel) -> Any:
        """The model's embedder (loaded once per process by the embed module's cache)."""
        from sisyphus_db.embed.embedder import load_embedder

        try:
            return load_embedder(model.name, device=self.config.device or self.db.settings.device)
        except ModelError as exc:
            raise ModelError(f"model {model.name} cannot embed query images here: {exc}") from None

    def batched_embedder(self, model: StoredModel) -> BatchedEmbedder:
        return BatchedEmbedder(self.embedder(model), self.batcher)

    def close(self) -> None:
        self.batcher.close()

    def can_embed(self, model: StoredModel) -> bool:
        from sisyphus_db.embed.models import get_model_spec

        try:
            get_model_spec(model.name)
        except Exception:  # noqa: BLE001 - a model stored by name only (imported vectors)
            return False
        return True

    def preload(self) -> None:
        """Load every stored model's embedder and faiss index now, so no search pays for it."""
        for model in self.models():
            if self.can_embed(model):
                try:
                    self.embedder(model)
                except Exception as exc:  # noqa: BLE001 - image search for it fails clearly later
                    logger.warning("cannot load the embedder of %s: %s", model.name, exc)
            try:
                self.index(model)
            except Exception as exc:  # noqa: BLE001 - searches of that model say why
                logger.warning("no faiss index for %s yet: %s", model.name, exc)


def tune_threads() -> None:
    """Thread counts for a server: parallelism comes from concurrent requests, not inside one.

    A single faiss query gains nothing from OpenMP and several of them would fight over
    the cores; torch keeps its default (every core) because forward passes run one at a
    time, concurrent query images batched (sisyphus_db.serve.embedding).
    """
    import faiss

    faiss.omp_set_num_threads(1)
