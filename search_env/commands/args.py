"""argparse pieces shared by ``search-env``, ``python -m search_env.commands.demo`` and the retrieval server (the
server may import it: it imports nothing of the package)."""

from __future__ import annotations

import argparse


class CLIError(Exception):
    """A user error: printed as one line, exit status 2."""


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Help that ends each option's text with its default, ``(default: 8000)``, unless the text already speaks of
    its default, or there is none to show (``None``, or ``False`` for a flag)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or any(action.default is none for none in (None, False, argparse.SUPPRESS)):
            return text
        return super()._get_help_string(action)


class RawDescriptionDefaultsHelpFormatter(argparse.RawDescriptionHelpFormatter, DefaultsHelpFormatter):
    """:class:`DefaultsHelpFormatter`, with the description printed as written (a module docstring)."""


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line (the usage is one ``--help`` away), and each option's help shows its
    default (:class:`DefaultsHelpFormatter`; subcommands' parsers are of this class too)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def positive_int(text: str) -> int:
    """An ``argparse`` type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_float(text: str) -> float:
    """An ``argparse`` type: a finite number of at least 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number of at least 0, got {text}")
    return value
