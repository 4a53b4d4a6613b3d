"""The options every command shares, defined once so that each means one thing everywhere.

=============  ====================================================================================
``--data``     SOURCE: the one data grammar (:func:`polymodal.data.sources.parse_source`): a
               .csv/.jsonl/.parquet manifest, a label/file.ext folder, tar shards, builtin:NAME[:SPLIT]
``--model``    DIR: a model folder polymodal saved (a run folder is one), or a Hugging Face CLIP folder
``--out``      PATH: what the command writes (a run/model/index folder, a .npy, a .png)
``--json``     one JSON document on stdout instead of text (no progress on stderr)
``--seed``     the random seed of everything the command draws
``--split``    which split to read: train, val, test (or all)
``--quiet``    no progress on stderr
``--resume``   continue a training command from OUT/checkpoint (every training command writes one)
=============  ====================================================================================

This module imports click and the data grammar alone: ``polymodal --help`` must not import torch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

from polymodal.data.sources import SOURCE_GRAMMAR

F = TypeVar("F", bound=Callable[..., Any])

SHARED_OPTIONS: tuple[str, ...] = ("--data", "--model", "--out", "--json", "--seed", "--split", "--quiet")
SPLITS: tuple[str, ...] = ("train", "val", "test")


def data_option(what: str = "the data", *, default: str | None = None, required: bool = False) -> Callable[[F], F]:
    """``--data SOURCE``; ``what`` says what the command reads from it."""
    return click.option("--data", "data", metavar="SOURCE", default=default, required=required,
                        show_default=default is not None, help=f"{what}; SOURCE is {SOURCE_GRAMMAR}")


def model_option(what: str = "model folder", *, required: bool = True, multiple: bool = False) -> Callable[[F], F]:
    """``--model DIR`` (read, never written), into the parameter ``model_dir`` (``models`` when repeated)."""
    return click.option("--model", "models" if multiple else "model_dir", metavar="DIR", required=required,
                        multiple=multiple, type=click.Path(exists=True, file_okay=False), help=what)


def out_option(what: str, *, required: bool = True, default: str | None = None, folder: bool = True) -> Callable[[F], F]:
    """``--out PATH``: what the command writes (a folder when ``folder``, else a file)."""
    kind = click.Path(file_okay=False) if folder else click.Path(dir_okay=False)
    return click.option("--out", "out", metavar="PATH", required=required and default is None, default=default,
                        show_default=default is not None, type=kind, help=what)


def json_option(f: F) -> F:
    """``--json``: one JSON document on stdout (and no progress on stderr)."""
    return click.option("--json", "as_json", is_flag=True, help="print one JSON document on stdout")(f)


def seed_option(default: int = 0) -> Callable[[F], F]:
    return click.option("--seed", default=default, show_default=True, type=click.IntRange(min=0),
                        help="random seed")


def split_option(default: str = "test", *, choices: Sequence[str] = SPLITS, help: str = "") -> Callable[[F], F]:
    return click.option("--split", default=default, show_default=True, type=click.Choice(list(choices)),
                        help=help or "which split to read")


def resume_option(f: F) -> F:
    """``--resume``: continue the run from ``OUT/checkpoint``, which training rewrites as it goes."""
    return click.option("--resume", is_flag=True,
                        help="continue from OUT/checkpoint, written as training goes: a crash or Ctrl-C loses at "
                             "most the work since the last one")(f)


def quiet_option(f: F) -> F:
    """``--quiet``: no progress on stderr."""
    return click.option("--quiet", "-q", is_flag=True, help="no progress on stderr")(f)


def progress_on(quiet: bool, as_json: bool = False) -> bool:
    """Whether a command shows progress on stderr: not with ``--quiet``, nor with ``--json``."""
    return not (quiet or as_json)


def stderr_log(quiet: bool, as_json: bool = False) -> Callable[[str], None] | None:
    """A function printing progress lines on stderr, or ``None`` when they are off."""
    return (lambda line: click.echo(line, err=True)) if progress_on(quiet, as_json) else None


def report_skipped(bad: Sequence[object], what: str = "unreadable image(s)") -> None:
    """Skipped inputs on stderr, at most 20 named (stdout stays the result)."""
    if bad:
        click.echo(f"skipped {len(bad)} {what}:", err=True)
        for b in bad[:20]:
            click.echo(f"  {b}", err=True)
        if len(bad) > 20:
            click.echo(f"  ... and {len(bad) - 20} more", err=True)


def echo_json(document: Any) -> None:
    import json

    click.echo(json.dumps(document, indent=2, default=str))


class DefaultVerbGroup(click.Group):
    """A group whose arguments run ``default_verb`` when they name no verb: ``polymodal caption --model DIR
    a.png`` is ``polymodal caption run --model DIR a.png`` (the form these commands had before the groups)."""

    def __init__(self, *args: Any, default_verb: str, **kwargs: Any) -> None:
        kwargs.setdefault("no_args_is_help", True)
        super().__init__(*args, **kwargs)
        self.default_verb = default_verb
        # The group itself takes no options: everything after its name belongs to a verb.
        self.context_settings = {**self.context_settings, "ignore_unknown_options": True}
        self.allow_interspersed_args = False

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = [self.default_verb, *args]
        return super().parse_args(ctx, args)

    def format_usage(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        formatter.write_usage(ctx.command_path, f"[{self.default_verb}] ARGS... | COMMAND [ARGS]...")
