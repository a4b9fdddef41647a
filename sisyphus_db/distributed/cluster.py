"""Connecting to Ray, and the database URL its workers use.

`--ray` alone starts a local Ray instance for the run; `--ray ADDRESS` (or
SISYPHUS_RAY_ADDRESS) joins an existing cluster. Workers reach PostgreSQL by URL, so the
embedded server must listen on TCP; its Unix socket is invisible to other machines.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sisyphus_db.config import Settings
from sisyphus_db.errors import SisyphusError

logger = logging.getLogger(__name__)

ADDRESS_ENV = "SISYPHUS_RAY_ADDRESS"
LOCAL = "local"
PROBE_TIMEOUT_SECONDS = 5.0


class DistributedError(SisyphusError):
    """Ray cannot be reached, or the run cannot be distributed as asked."""


@dataclass(frozen=True)
class ClusterInfo:
    address: str
    cpus: float
    gpus: float
    nodes: int
    started_here: bool


def resolve_address(requested: str | None) -> str:
    """`local` for a Ray instance of our own; otherwise the cluster address (host:port, ray://, auto)."""
    address = (requested or "").strip() or os.environ.get(ADDRESS_ENV, "").strip() or LOCAL
    return address


def _probe(address: str) -> None:
    """Fail in seconds on an address nobody listens on (ray.init would retry for minutes)."""
    if address in (LOCAL, "auto"):
        return
    target = address.removeprefix("ray://")
    host, _, port_text = target.rpartition(":")
    if not host or not port_text.isdigit():
        raise DistributedError(f"--ray expects an address like HOST:PORT or ray://HOST:PORT, got {address!r}")
    try:
        with socket.create_connection((host, int(port_text)), timeout=PROBE_TIMEOUT_SECONDS):
            pass
    except OSError as exc:
        raise DistributedError(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}") from None


@contextlib.contextmanager
def ray_cluster(requested: str | None, *, num_cpus: int | None = None) -> Iterator[ClusterInfo]:
    """Ray for the length of a run: joined, or started locally and shut down afterwards."""
    try:
        import ray
    except ImportError:
        raise DistributedError("--ray needs Ray: pip install 'sisyphus-db[ray]' (or \"ray[data]\")") from None

    address = resolve_address(requested)
    _probe(address)
    if ray.is_initialized():
        # A caller (a test session, a notebook) already holds a connection: use it, keep it.
        yield _info(ray, address, started_here=False)
        return
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    try:
        if address == LOCAL:
            ray.init(num_cpus=num_cpus, **kwargs)
        else:
            ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
        raise DistributedError(f"cannot start or join Ray at {address}: {str(exc).strip().splitlines()[0]}") from None
    try:
        yield _info(ray, address, started_here=True)
    finally:
        ray.shutdown()


def _info(ray: Any, address: str, *, started_here: bool) -> ClusterInfo:
    resources = ray.cluster_resources()
    nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
    return ClusterInfo(address, float(resources.get("CPU", 0)), float(resources.get("GPU", 0)), nodes, started_here)


def worker_database_url(settings: Settings, db_url: str) -> str:
    """The URL Ray workers connect with: the configured one, or the embedded server's TCP URL."""
    if not settings.uses_embedded_database:
        return db_url
    from sisyphus_db.db.embedded import EmbeddedServer

    tcp = EmbeddedServer(settings.home).tcp_url()
    if tcp is None:
        raise DistributedError("the embedded database listens only on a Unix socket, which Ray workers on other "
                               "machines cannot reach: run `sisyphus db start --port 5433` first (or use "
                               "--database-url)")
    return tcp

