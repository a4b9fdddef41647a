"""`sisyphus db ...` and the CLI contract: help everywhere, README coverage, one-line errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import typer.main

from sisyphus_db.cli.main import app
from sisyphus_db.db.migrate import head_revision

README = Path(__file__).resolve().parents[1] / "README.md"


def _command_paths() -> list[tuple[str, ...]]:
    root = typer.main.get_command(app)
    paths: list[tuple[str, ...]] = []

    def walk(command: object, prefix: tuple[str, ...]) -> None:
        subcommands = getattr(command, "commands", None)
        if subcommands:
            for name, sub in subcommands.items():
                walk(sub, (*prefix, name))
        else:
            paths.append(prefix)

    walk(root, ())
    return paths


def test_every_command_has_help_and_is_in_the_readme(cli) -> None:
    readme = README.read_text()
    for path in _command_paths():
        result = cli(*path, "--help")
        assert result.exit_code == 0, (path, result.stderr)
        assert "Usage:" in result.stdout
        assert f"sisyphus {' '.join(path)}" in readme, f"`sisyphus {' '.join(path)}` is missing from README.md"


def test_db_status_json_on_an_external_database(cli, fresh_database_url: str) -> None:
    result = cli("--database-url", fresh_database_url, "db", "status", "--json")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["embedded"] is False
    assert document["schema_up_to_date"] is True
    assert document["counts"]["frames"] == 0


def test_db_start_refuses_an_external_database(cli, fresh_database_url: str) -> None:
    result = cli("db", "start", env={"SISYPHUS_DATABASE_URL": fresh_database_url})
    assert result.exit_code == 1
    assert result.stderr == ("Error: `db start` manages the embedded server, but an external database is "
                             "configured (SISYPHUS_DATABASE_URL or --database-url)\n")


def test_bad_database_url_is_one_line_without_traceback(cli) -> None:
    result = cli("--database-url", "postgresql://x@127.0.0.1:1/nope", "db", "upgrade")
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("Error: cannot connect to the database at postgresql://x@127.0.0.1:1/nope: ")


def test_malformed_url_and_unwritable_home(cli, tmp_path: Path) -> None:
    result = cli("--database-url", "notaurl", "db", "status")
    assert (result.exit_code, result.stderr) == (1, "Error: not a PostgreSQL URL: notaurl\n")
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    result = cli("db", "status", env={"SISYPHUS_HOME": str(blocker / "home")})
    assert result.exit_code == 1
    assert re.fullmatch(r"Error: SISYPHUS_HOME .*/blocker/home cannot be written: Not a directory\n", result.stderr)


def test_upgrade_and_downgrade_through_the_cli(cli, fresh_database_url: str) -> None:
    env = {"SISYPHUS_DATABASE_URL": fresh_database_url}
    assert cli("db", "downgrade", "base", env=env).stdout == "schema at revision base\n"
    refused = cli("db", "status", "--json", env=env)
    assert json.loads(refused.stdout)["schema_up_to_date"] is False
    assert cli("db", "upgrade", env=env).stdout == f"schema at revision {head_revision()}\n"
    bad = cli("db", "downgrade", "nonsense", env=env)
    assert bad.exit_code == 1 and bad.stderr.startswith("Error: unknown revision 'nonsense'")


def test_usage_errors_exit_2_with_typers_message(cli) -> None:
    result = cli("db", "start", "--port", "notaport")
    assert result.exit_code == 2
    assert "Invalid value" in result.stderr and "internal error" not in result.stderr
    unknown = cli("nosuchcommand")
    assert unknown.exit_code == 2 and "No such command" in unknown.stderr
