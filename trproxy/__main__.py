"""``python -m trproxy``: the same as the ``trproxy`` command."""

from .cli import entry

entry()
