"""The ``shopstream`` command line: the one composition root.

Core commands live here (``broker``, ``topics``, ``schemas``, ``run``, ``up``); role
commands (``produce``, ``dashboard``, ``replay``, ...) arrive through the
``shopstream.commands`` entry points, so the core never imports a role.

Errors a user can fix print one line and exit with code 2; see :func:`main`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click

from shopstream.apps import load_commands
from shopstream.cli.compose import compose
from shopstream.cli.core import broker, run, schemas, topics
from shopstream.cli.up import up
from shopstream.errors import UserError

EXIT_USER_ERROR = 2


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="shopstream")
def cli() -> None:
    """shopstream: streaming analytics for a shop's retail events over the Kafka API."""


for command in (broker, topics, schemas, run, up, compose):
    cli.add_command(command)


def _add_role_commands() -> None:
    for command in load_commands():
        assert isinstance(command, click.Command), command
        if command.name not in cli.commands:
            cli.add_command(command)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return its exit code (2 for any error the user can fix)."""
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
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        click.echo(f"shopstream: {exc.format_message()}", err=True)
        return exc.exit_code
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
