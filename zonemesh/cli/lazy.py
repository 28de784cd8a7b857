"""Subcommands whose modules load only when they run, so `zonemesh --help` stays light.

`zonemesh demo` pulls in the lab and its topology (and through them the translation layer);
every other `zonemesh` process — `dp run` next to each workload, `cp run`, `echo` — must not
pay for that. The group lists a `LazyCommand` by its short help and swaps in the real command
only when it is the one being run (or asked for its own `--help`).
"""

from __future__ import annotations

import importlib

import click


class LazyCommand(click.Command):
    """Stands in for `module:attribute` in the group's listing."""

    def __init__(self, name: str, target: str, short_help: str) -> None:
        super().__init__(name, short_help=short_help)
        self.target = target

    def load(self) -> click.Command:
        module, _, attribute = self.target.partition(":")
        command = getattr(importlib.import_module(module), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{self.target} is not a click command")
        return command


class LazyGroup(click.Group):
    """A group whose `LazyCommand`s are loaded when resolved for running, never for listing."""

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name, command, rest = super().resolve_command(ctx, args)
        if isinstance(command, LazyCommand):
            command = command.load()
        return name, command, rest
