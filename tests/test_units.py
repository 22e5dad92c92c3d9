"""Durations and counts as users type them (shared by export and search flags)."""
import pytest

from cspnas.errors import CspnasError
from cspnas.units import format_count, format_duration_ms, parse_count, parse_duration_ms


@pytest.mark.parametrize("text, ms", [
    ("8ms", 8.0), ("8 ms", 8.0), ("500us", 0.5), ("500µs", 0.5), ("0.01s", 10.0), ("2s", 2000.0),
    ("1.5ms", 1.5), (".5ms", 0.5), ("250000ns", 0.25), ("1e3us", 1.0), ("8MS", 8.0), (" 3ms ", 3.0),
    (12.5, 12.5), (3, 3.0),
])
def test_parse_duration_ms(text, ms):
    assert parse_duration_ms(text) == pytest.approx(ms)


@pytest.mark.parametrize("text", ["8", "ms", "8 m", "8 min", "8msec", "-8ms", "0ms", "8..1ms", "", "fast", 0, -1.0,
                                  float("nan"), float("inf")])
def test_parse_duration_ms_rejects(text):
    with pytest.raises(CspnasError) as e:
        parse_duration_ms(text)
    assert "\n" not in str(e.value) and ("8ms" in str(e.value))


@pytest.mark.parametrize("text, n", [
    ("300M", 300_000_000), ("5M", 5_000_000), ("1.2G", 1_200_000_000), ("12k", 12_000), ("12K", 12_000),
    ("1000", 1000), ("2.5m", 2_500_000), ("1B", 1_000_000_000), ("1T", 10**12), ("5e6", 5_000_000),
    (" 7 M ", 7_000_000), (1234, 1234), (2.5e6, 2_500_000),
])
def test_parse_count(text, n):
    assert parse_count(text) == n
    assert isinstance(parse_count(text), int)


@pytest.mark.parametrize("text", ["", "M", "5X", "5MB", "-5M", "0", "1.2.3G", "five", float("nan")])
def test_parse_count_rejects(text):
    with pytest.raises(CspnasError) as e:
        parse_count(text)
    assert "300M" in str(e.value)


@pytest.mark.parametrize("n", [7, 999, 1_000, 12_345, 987_654, 5_000_000, 1_234_567_890])
def test_format_count_round_trips_within_rounding(n):
    text = format_count(n)
    assert abs(parse_count(text) - n) <= 0.005 * n + 0.5


def test_format_missing_values():
    assert format_count(None) == "-" and format_count(float("nan")) == "-"
    assert format_duration_ms(None) == "-" and format_duration_ms(float("nan")) == "-"


@pytest.mark.parametrize("ms, text", [(1e-6, "1 ns"), (0.347, "347 us"), (8.0, "8.00 ms"), (123.4, "123 ms")])
def test_format_duration(ms, text):
    assert format_duration_ms(ms) == text
    assert parse_duration_ms(text.replace(" ", "")) == pytest.approx(ms, rel=0.01)
