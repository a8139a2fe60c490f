"""Every command's --help reads at 80 columns: no line wider, no option name cut, no help text eaten as markup."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from loopnav.cli import app


def _commands(group, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path; groups are told by their `commands` (typer may build on its own copy of click)."""
    found = [path]
    for name, command in group.commands.items():
        found += _commands(command, (*path, name)) if hasattr(command, "commands") else [(*path, name)]
    return found


COMMANDS = _commands(typer.main.get_command(app))


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "loopnav")
def test_help_fits_80_columns_and_cuts_no_option(command):
    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(map(len, lines)) <= 80 and "…" not in result.output
    click_command = typer.main.get_command(app)
    for name in command:
        click_command = click_command.commands[name]
    for param in click_command.params:
        for option in param.opts if param.opts[0].startswith("-") else ():
            assert option in result.output, option  # every name and alias in full
    helps = " ".join(" ".join(p.help.split()) for p in click_command.params if getattr(p, "help", None))
    assert "[" not in helps or all(part.split("]")[0] in result.output for part in helps.split("[")[1:])


def test_the_command_list_covers_the_commands():
    assert ("evaluate",) in COMMANDS and ("leaderboard", "paper") in COMMANDS and ("weights", "check") in COMMANDS
