"""The ``shopstream`` command line: the one composition root.

Core commands live here (``broker``, ``topics``, ``schemas``, ``up``); role
commands (``produce``, ``run``, ``dashboard``, ...) arrive through the
``shopstream.commands`` entry points, so the core never imports a role.

Errors a user can fix print one line and exit with code 2; see :func:`main`.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence

import click

from shopstream.cli.core import broker, schemas, topics, up
from shopstream.errors import UserError
from shopstream.plugins import load_commands

EXIT_USER_ERROR = 2


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="shopstream")
def cli() -> None:
    """shopstream: streaming analytics for a shop's retail events over the Kafka API."""


for command in (broker, topics, schemas, up):
    cli.add_command(command)


def _add_role_commands() -> None:
    for command in load_commands():
        if command.name not in cli.commands:
            cli.add_command(command)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return its exit code (2 for any error the user can fix)."""
    # quixstreams imports authlib's httpx client, which warns on every start of every
    # process; the warning is about authlib's own future, not anything we can act on.
    warnings.filterwarnings("ignore", message="The httpx module is deprecated")
    _add_role_commands()
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        result = cli.main(args=args, prog_name="shopstream", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:  # `shopstream` alone: show help
        click.echo(exc.ctx.get_help() if exc.ctx else "", err=True)
        return EXIT_USER_ERROR
    except click.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx else "shopstream"
        click.echo(f"{where}: {exc.format_message()} (see `{where} --help`)", err=True)
        return EXIT_USER_ERROR
    except click.ClickException as exc:
        click.echo(f"shopstream: {exc.format_message()}", err=True)
        return EXIT_USER_ERROR
    except UserError as exc:
        click.echo(f"shopstream: {exc}", err=True)
        return EXIT_USER_ERROR
    except click.exceptions.Abort:
        return 130
    except KeyboardInterrupt:
        return 130
    return result if isinstance(result, int) else 0


def entry() -> None:
    """Console-script entry point."""
    sys.exit(main())
