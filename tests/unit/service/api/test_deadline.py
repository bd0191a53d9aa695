"""The request deadline: body timeout, else header, else the server default; the header is checked only when used."""

import pytest

from service.api.deps import RequestDeadline
from service.errors import InvalidInput


def test_body_wins_then_header_then_default():
    assert RequestDeadline(100.0, "2000", 30_000).at(500) == pytest.approx(100.5)
    assert RequestDeadline(100.0, "2000", 30_000).at(None) == pytest.approx(102.0)
    assert RequestDeadline(100.0, None, 30_000).at(None) == pytest.approx(130.0)
    assert RequestDeadline(100.0, None, None).at(None) is None


@pytest.mark.parametrize("header", ["soon", "0", "-1", "3600000", "nan"])
def test_a_bad_header_is_a_400_when_it_is_the_deadline(header):
    with pytest.raises(InvalidInput) as raised:
        RequestDeadline(0.0, header, None).at(None)
    assert raised.value.code.value == "invalid_timeout"
    assert RequestDeadline(0.0, header, None).at(250) == pytest.approx(0.25)  # a body timeout ignores the header
