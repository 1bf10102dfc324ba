"""Errors whose message is the whole story for the user: the CLI prints them without a
traceback. A leaf module: every other module may import it, it imports none of them."""

from __future__ import annotations


class CliError(Exception):
    """A bad input, setting or state the user can fix; the message says what and where."""


class PlanError(ValueError):
    """The config does not describe a runnable set of shards."""
