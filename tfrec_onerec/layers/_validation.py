"""Argument checks shared by the layers: one message format for every layer."""


def check_positive(owner: str, name: str, value) -> int:
    """``int(value)``; a ValueError naming `owner` and `name` unless `value` is a positive int."""
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"{owner}: {name} must be a positive int, got {value!r}.")
    return int(value)


def check_rate(owner: str, name: str, value) -> float:
    """``float(value)``; a ValueError naming `owner` and `name` unless `value` is in [0, 1)."""
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{owner}: {name} must be in [0, 1), got {value!r}.")
    return float(value)
