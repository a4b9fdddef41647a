"""The built wheel carries the CLI, the migrations and the SQL, and works outside the checkout."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from sisyphus_db.db.migrate import head_revision

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_installed_wheel_migrates_a_database_from_outside_the_checkout(tmp_path: Path, fresh_database_url: str) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(wheels), str(ROOT)],
                   check=True, capture_output=True)
    (wheel,) = wheels.glob("sisyphus_db-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "sisyphus_db/cli/main.py" in names
    assert "sisyphus_db/migrations/env.py" in names
    assert any(name.startswith("sisyphus_db/migrations/versions/0001") for name in names)
    assert "sisyphus_db/sql/views.sql" in names
    assert not [name for name in names if name.split("/")[0] in {"cli", "migrations", "sql", "tests"}]

    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target), "SISYPHUS_DATABASE_URL": fresh_database_url,
           "SISYPHUS_HOME": str(tmp_path / "home")}
    script = ("import sisyphus_db, sys; from sisyphus_db.cli.main import main; "
              "assert sisyphus_db.__file__.startswith(sys.argv[1]), sisyphus_db.__file__; main(sys.argv[2:])")
    down = subprocess.run([sys.executable, "-c", script, str(target), "db", "downgrade", "base"], cwd=outside, env=env,
                          capture_output=True, text=True)
    assert down.returncode == 0, down.stderr
    up = subprocess.run([sys.executable, "-c", script, str(target), "db", "upgrade"], cwd=outside, env=env,
                        capture_output=True, text=True)
    assert (up.returncode, up.stdout) == (0, f"schema at revision {head_revision()}\n"), up.stderr
