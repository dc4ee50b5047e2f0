"""Checks of ``AuditLogger``'s options, made when it is built so a typo fails at start-up
with a ``ConfigurationError`` rather than later on the writer thread."""

from __future__ import annotations

from pathlib import Path

from .._errors import ConfigurationError


def require_number(
    name: str, value: object, minimum: float, *, whole: bool = False, exclusive: bool = False
) -> None:
    kind = "a whole number" if whole else "a number"
    valid_type = int if whole else (int, float)
    if isinstance(value, bool) or not isinstance(value, valid_type):
        raise ConfigurationError(f"{name} must be {kind}, got {type(value).__name__}")
    assert isinstance(value, int | float)
    if value < minimum or (exclusive and value == minimum):
        if exclusive:
            raise ConfigurationError(f"{name} must be positive")
        bound = "not be negative" if minimum == 0 else f"be at least {minimum}"
        raise ConfigurationError(f"{name} must {bound}")


def require_spool_dir(path: Path) -> None:
    """The spool is where events wait when the database cannot take them: check it now."""
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise ConfigurationError(
            f"spool_dir cannot be used as a folder ({type(exc).__name__}): {path}"
        ) from exc


def require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigurationError(message)
