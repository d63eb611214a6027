"""The one one-line exception formatter (`noisytail.errors.short_error`)."""

from noisytail.errors import short_error


def test_short_error_is_one_line_of_at_most_160_characters():
    assert short_error(ValueError("bad\n  value\tthere ")) == "bad value there"
    assert short_error(KeyError()) == "KeyError"  # no message: the type names it
    long = short_error(OSError("x" * 400))
    assert len(long) == 160 and long.endswith("...") and long.startswith("x" * 157)
    assert short_error(RuntimeError("y" * 160)) == "y" * 160  # at the limit: kept whole
