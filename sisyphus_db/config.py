"""Settings: where the data lives and which database to use.

Read from the environment when asked, never at import time, so tests and the CLI can
point the library at another home or database without reloading modules.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import platformdirs

from sisyphus_db.errors import ConfigError

HOME_ENV = "SISYPHUS_HOME"
DATABASE_URL_ENV = "SISYPHUS_DATABASE_URL"
DEVICE_ENV = "SISYPHUS_DEVICE"
DEVICES = ("auto", "cpu", "cuda")


def default_home() -> Path:
    return Path(platformdirs.user_data_dir("sisyphus", appauthor=False))


@dataclass(frozen=True)
class Settings:
    """Everything the library needs to know about its surroundings."""

    home: Path = field(default_factory=default_home)
    database_url: str | None = None
    device: str = "auto"

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        """Settings from SISYPHUS_* variables; keyword overrides that are not None win."""
        home_text = os.environ.get(HOME_ENV)
        settings = cls(
            home=Path(home_text).expanduser() if home_text else default_home(),
            database_url=os.environ.get(DATABASE_URL_ENV) or None,
            device=os.environ.get(DEVICE_ENV, "auto"),
        )
        given = {key: value for key, value in overrides.items() if value is not None}
        if "home" in given:
            given["home"] = Path(str(given["home"])).expanduser()
        settings = replace(settings, **given)  # type: ignore[arg-type]
        if settings.device not in DEVICES:
            raise ConfigError(f"unknown device {settings.device!r}: expected one of {', '.join(DEVICES)}")
        return settings

    @property
    def uses_embedded_database(self) -> bool:
        return self.database_url is None

    @property
    def pgdata(self) -> Path:
        return self.home / "pgdata"

    @property
    def frames_dir(self) -> Path:
        """Where JPEGs of video key frames are written."""
        return self.home / "frames"

    @property
    def index_dir(self) -> Path:
        """Where faiss sidecar index files are written."""
        return self.home / "indexes"

    def ensure_home(self) -> Path:
        """Create the home directory, or fail with one clear line if it cannot be written."""
        return ensure_writable_home(self.home)


def ensure_writable_home(home: Path) -> Path:
    """Create `home` and prove it writable, or raise one clear ConfigError line."""
    try:
        home.mkdir(parents=True, exist_ok=True)
        probe = home / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        reason = exc.strerror or exc.__class__.__name__
        raise ConfigError(f"SISYPHUS_HOME {home} cannot be written: {reason}") from None
    return home
