"""API keys: made, named, parsed from the environment and compared by digest only."""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from dataclasses import dataclass

logger = logging.getLogger(__name__)


KEY_PREFIX = "cbk_"
# The shortest key CLUSTERBENCH_API_KEYS may hold: 24 random characters are over 128 bits,
# past guessing at any rate; a short human-made key is not.
MIN_KEY_CHARS = 24
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# How long "is any key configured?" is remembered: a key made by the CLI while the
# server runs closes the service within this time, without a query per request.
KEYS_CHECK_S = 1.0


class KeyNameError(ValueError):
    """A key name the store does not accept, or one that is already taken."""


def new_key() -> str:
    """A fresh API key: 256 random bits, URL-safe."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def check_name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name):
        raise KeyNameError(
            f"{name!r} is not a key name: 1 to 64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return name


def parse_keys(text: str) -> dict[str, str]:
    """``"name:key,name:key"`` -> digest of each key -> its name.

    Raises ValueError naming the entry (never the key) that is malformed.
    """
    digests: dict[str, str] = {}
    for position, entry in enumerate(text.split(","), start=1):
        if not entry.strip():
            continue
        name, sep, key = entry.strip().partition(":")
        if not sep or not key:
            raise ValueError(
                f"CLUSTERBENCH_API_KEYS: entry {position} is not 'name:key'"
                + (f" (name {name!r})" if sep else "")
            )
        check_name(name)
        if len(key) < MIN_KEY_CHARS:
            raise ValueError(
                f"CLUSTERBENCH_API_KEYS: the key of {name!r} (entry {position}) is shorter than "
                f"{MIN_KEY_CHARS} characters; use a random one, e.g. from "
                "'python -c \"import secrets; print(secrets.token_urlsafe(32))\"'"
            )
        digests[key_digest(key)] = check_name(name)
    return digests


@dataclass(frozen=True)
class KeyInfo:
    name: str
    created_at: float | None
    source: str  # "store" or "environment"
