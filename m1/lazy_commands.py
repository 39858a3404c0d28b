"""Sub-commands imported only when one of them runs or a help page lists it.

``m1 worker`` then imports the worker and not every other command's modules (the evaluations
alone pull in scipy.stats: seconds of start-up for each worker process the demo, the benchmark
and the tests start).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import typer
from typer import _click as click
from typer.core import TyperGroup
from typer.main import get_group

#: Registers one or more commands (by name) on the Typer it is given, importing their modules.
Loader = Callable[[typer.Typer], None]


def lazy_group(loaders: Mapping[str, Loader]) -> type[TyperGroup]:
    """A Typer group class (``typer.Typer(cls=...)``) that lists its own commands, then the names
    of ``loaders``; the first use of such a name calls its loader, whose commands are kept.

    >>> def hello(app: typer.Typer) -> None:
    ...     app.command("hello")(lambda: print("hi"))
    >>> cli = typer.Typer(cls=lazy_group({"hello": hello}))
    >>> _ = cli.callback()(lambda: None)  # a group, even with one command of its own
    >>> _ = cli.command("eager")(lambda: None)
    >>> from typer.testing import CliRunner
    >>> CliRunner().invoke(cli, ["hello"]).output
    'hi\\n'
    >>> group = typer.main.get_command(cli)
    >>> group.list_commands(click.Context(group))
    ['eager', 'hello']
    """

    class LazyGroup(TyperGroup):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.loaded: dict[str, click.Command] = {}

        def list_commands(self, ctx: click.Context) -> list[str]:
            return [*super().list_commands(ctx), *loaders]

        def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
            if cmd_name not in loaders:
                return super().get_command(ctx, cmd_name)
            if cmd_name not in self.loaded:
                holder = typer.Typer()
                loaders[cmd_name](holder)
                self.loaded.update(get_group(holder).commands)
            return self.loaded.get(cmd_name)

    return LazyGroup
