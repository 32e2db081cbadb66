"""Option parsing shared by the commands (the parser and the command modules import it)."""

from __future__ import annotations

import json

from ..core.errors import ConfigError


def json_object(text: str | None, option: str) -> dict:
    """The JSON object given to a command-line ``option`` ({} when empty); a one-line error otherwise."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{option} is not valid JSON: {exc.msg}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{option} must be a JSON object, e.g. '{{\"regularizer\": 1e-6}}'")
    return value
