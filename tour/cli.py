"""``shopstream tour MODEL``: one of the course's five models, live, with what it showed."""

from __future__ import annotations

import click
from rich.console import Console
from rich.table import Table

from shopstream.settings import get_settings
from tour.scenarios import SCENARIOS, TourResult


@click.command("tour")
@click.argument("model", type=click.Choice([*SCENARIOS, "all"]))
def tour(model: str) -> None:
    """Show MODEL (pubsub, streaming, sourcing, cqrs, choreography or all) on the running
    stack, with the real events, offsets and timings it produced."""
    settings = get_settings()
    console = Console()
    results = []
    for name in SCENARIOS if model == "all" else [model]:
        with console.status(f"running the {name} scenario on {settings.broker_address} ..."):
            result = SCENARIOS[name](settings)
        show(console, result)
        results.append(result)
    if not all(r.ok for r in results):
        raise click.exceptions.Exit(1)


def show(console: Console, result: TourResult) -> None:
    console.rule(f"[bold]{result.title}")
    console.print(result.explanation)
    for step in result.steps:
        if step.text:
            console.print(step.text)
        if step.rows:
            table = Table(show_header=True, header_style="bold")
            for column in step.rows[0]:
                table.add_column(str(column))
            for row in step.rows:
                table.add_row(*["-" if v is None else str(v) for v in row.values()])
            console.print(table)
    for claim, holds in result.claims.items():
        console.print(f"  {'[green]yes' if holds else '[red]NO'}[/] {claim}")
