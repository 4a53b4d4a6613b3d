"""The ``polymodal`` command. Each subcommand lives in its own module and only parses and prints."""

from __future__ import annotations

import importlib
import sys

import click

from polymodal.errors import PolymodalError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="polymodal")
def cli() -> None:
    """polymodal: multimodal machine learning, offline-first."""


# Each module holds one command group and exports COMMANDS; a new group adds its module name here.
COMMAND_MODULES = ("aligner_cmds", "search_cmds", "data_cmds", "v2l_cmds", "fuse_cmds")


def _register() -> None:
    for name in COMMAND_MODULES:
        for cmd in importlib.import_module(f"polymodal.cli.{name}").COMMANDS:
            cli.add_command(cmd)


_register()


def main(argv: list[str] | None = None) -> int:
    """Entry point: polymodal errors become one line on stderr and exit status 2."""
    try:
        cli.main(args=argv, prog_name="polymodal", standalone_mode=False)
    except PolymodalError as e:
        click.echo(f"error: {e}", err=True)
        return 2
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except KeyboardInterrupt:
        click.echo("interrupted; the last checkpoint is kept (use --resume)", err=True)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
