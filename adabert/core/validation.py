"""Eager checks for config dataclasses: each failure names the CLI flag and what was expected."""

from __future__ import annotations

from adabert.core.errors import AdabertError


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def require_positive_ints(cfg: object, *names: str) -> None:
    for name in names:
        v = getattr(cfg, name)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise AdabertError(f"{_flag(name)}: expected a positive integer, got {v}")


def config_int(cfg: dict, key: str, source: object, high: int = 10_000_000) -> int:
    """Field `key` of a config read from a file: an integer in 1..high, else an error naming `source`."""
    v = cfg.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= high:
        raise AdabertError(f"{source}: field {key!r} must be a positive integer, got {v!r}")
    return v


def require_positive(cfg: object, *names: str) -> None:
    for name in names:
        if not getattr(cfg, name) > 0:
            raise AdabertError(f"{_flag(name)}: expected a positive number, got {getattr(cfg, name)}")


def require_non_negative(cfg: object, *names: str) -> None:
    for name in names:
        if getattr(cfg, name) < 0:
            raise AdabertError(f"{_flag(name)}: expected a non-negative number, got {getattr(cfg, name)}")


def require_fraction(cfg: object, name: str, low: float, high: float, closed_high: bool = False) -> None:
    v = getattr(cfg, name)
    if not (low <= v <= high if closed_high else low <= v < high):
        raise AdabertError(f"{_flag(name)}: expected a number in [{low}, {high}{']' if closed_high else ')'}, got {v}")
