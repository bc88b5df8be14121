"""What the live and final tables show."""

from __future__ import annotations

import pytest

from hposvc.progress import _number


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (0.9999990463256836, "0.999999"),
        (0.96204507, "0.962"),
        (1.0, "1"),
        (3, "3"),
        (None, "—"),
        (2.5e-7, "2.5e-07"),
    ],
)
def test_number_never_shows_a_value_below_one_as_one(
    value: float | None, shown: str
) -> None:
    assert _number(value, 3) == shown
