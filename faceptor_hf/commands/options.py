"""Option values that several commands parse the same way."""

from __future__ import annotations

import json

from .errors import CommandError


def parse_key_values(items: list[str]) -> dict:
    """``--option KEY=VALUE ...`` -> options; a value is JSON where it parses (numbers, true/false), else a
    string."""
    options = {}
    for item in items:
        key, separator, value = item.partition("=")
        if not separator or not key:
            raise CommandError(f"--option {item}: write options as KEY=VALUE")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options
