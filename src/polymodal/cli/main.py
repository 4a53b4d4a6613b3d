"""The ``polymodal`` command: noun groups with the same verbs, and the older top-level names as aliases.

Each group lives in its own module, which only parses, calls one recipe function (``polymodal.recipes``) and
prints; every heavy import (torch, the models) happens inside the command that runs, so ``polymodal --help``
and every ``--help`` answer without importing torch (tests/test_cli.py checks it).
"""

from __future__ import annotations

import copy
import importlib
import sys

import click

from polymodal.errors import PolymodalError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="polymodal")
def cli() -> None:
    """polymodal: multimodal machine learning, offline-first.

    Every command: polymodal GROUP VERB --help. Shared options mean one thing everywhere: --data SOURCE,
    --model DIR, --out PATH (what is written), --json, --seed, --split, --quiet.
    """


# Each module exports COMMANDS (its groups and top-level commands) and may export ALIASES
# (top-level name -> (group, verb command)); a new group adds its module name here.
COMMAND_MODULES = ("dual_cmds", "fuse_cmds", "caption_cmds", "generate_cmds", "flava_cmds", "data_cmds",
                   "search_cmds")


def alias(name: str, group: click.Group, command: click.Command) -> click.Command:
    """``command`` under a top-level ``name`` too: the same parameters and callback, its help saying whose alias."""
    target = f"polymodal {group.name} {command.name}"
    a = copy.copy(command)
    a.name = name
    a.short_help = f"Alias of `{target}`."
    a.help = f"Alias of `{target}`.\n\n{command.help or ''}"
    return a


def _register() -> None:
    for module_name in COMMAND_MODULES:
        module = importlib.import_module(f"polymodal.cli.{module_name}")
        for cmd in module.COMMANDS:
            cli.add_command(cmd)
        for name, (group, command) in getattr(module, "ALIASES", {}).items():
            cli.add_command(alias(name, group, command))


_register()


def main(argv: list[str] | None = None) -> int:
    """Entry point: polymodal errors become one line on stderr and exit status 2."""
    try:
        cli.main(args=argv, prog_name="polymodal", standalone_mode=False)
    except PolymodalError as e:
        click.echo(f"error: {e}", err=True)
        return 2
    except click.exceptions.Abort as e:  # click turns Ctrl-C inside a command into Abort
        interrupted = isinstance(e.__cause__, KeyboardInterrupt)
        click.echo(_interrupted(argv) if interrupted else "aborted", err=True)
        return 130
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except KeyboardInterrupt:
        click.echo(_interrupted(argv), err=True)
        return 130
    return 0


def _interrupted(argv: list[str] | None) -> str:
    """What a Ctrl-C left: for a command with ``--resume``, where its run continues from."""
    cmd: click.Command = cli
    for token in sys.argv[1:] if argv is None else argv:
        sub = cmd.get_command(click.Context(cmd), token) if isinstance(cmd, click.Group) else None
        if sub is None:
            break
        cmd = sub
    if any(p.name == "resume" for p in cmd.params):
        return "interrupted; the run is kept up to its last checkpoint in OUT: the same command with --resume continues it"
    return "interrupted"


if __name__ == "__main__":
    sys.exit(main())
