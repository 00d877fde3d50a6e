import numpy as np
import pytest

from conftest import run_capped
from mfpipe.errors import InputError
from mfpipe.values import clean_float, format_number, parse_values


def test_lists_ranges_and_numbers():
    assert parse_values("1,1.5,2", "sigma_w2") == [1.0, 1.5, 2.0]
    assert parse_values("1:4:31", "sigma_w2")[:3] == [1.0, 1.1, 1.2]
    assert parse_values("1:4:31", "sigma_w2")[-1] == 4.0
    assert len(parse_values("1:4:31", "sigma_w2")) == 31
    assert parse_values(2.5, "x") == [2.5]
    assert parse_values(["1:2:3", 5], "x") == [1.0, 1.5, 2.0, 5.0]
    assert parse_values("10:50:5", "depth", integer=True) == [10, 20, 30, 40, 50]
    assert parse_values("3:3:1", "x") == [3.0]


def test_values_are_plain_python_without_linspace_noise():
    values = parse_values("0:1:11", "keep_rate")
    assert values[1] == 0.1 and values[3] == 0.3
    assert all(type(v) is float for v in values)
    assert clean_float(np.float64(0.09999999999999999)) == 0.1
    assert type(clean_float(np.float32(1.5))) is float


@pytest.mark.parametrize("bad", ["", "1,,2", "a", "1:4", "1:4:x", "1:4:0", "1:4:1", "nan", "1:2:3:4"])
def test_malformed_values_name_the_field(bad):
    with pytest.raises(InputError) as err:
        parse_values(bad, "sigma_w2")
    assert "sigma_w2" in str(err.value) and "start:stop:count" in str(err.value)


def test_integer_fields_reject_fractions():
    with pytest.raises(InputError, match="depth"):
        parse_values("1.5", "depth", integer=True)
    with pytest.raises(InputError, match="depth"):
        parse_values(True, "depth", integer=True)


@pytest.mark.parametrize(
    "value, text",
    [(1, "1"), (1.0, "1"), (1.00, "1"), (0.1 + 0.2, "0.3"), (1e-4, "0.0001"), (1e-5, "0.00001"),
     (0.09999999999999999, "0.1"), (2.5, "2.5"), (-0.0, "0"), (300, "300"), (0.98, "0.98")],
)
def test_format_number_is_canonical(value, text):
    assert format_number(value) == text


def test_huge_range_is_refused_before_it_is_built():
    # before issue 9: 1:4:10000000000 built a list of 10^10 floats (hundreds of GB) before any
    # check; run in a subprocess capped at 1 GB so a regression fails fast without filling memory
    from mfpipe.values import MAX_RANGE_COUNT, parse_values

    assert len(parse_values(f"0:1:{MAX_RANGE_COUNT}", "--sigma-w2")) == MAX_RANGE_COUNT
    code = ("from mfpipe.values import parse_values\n"
            "from mfpipe.errors import InputError\n"
            "try:\n    parse_values('1:4:10000000000', '--sigma-w2')\n"
            "except InputError as err:\n    print(err)\n")
    out = run_capped(["-c", code], gigabytes=1)
    assert out.returncode == 0, out.stderr[-500:]
    assert "--sigma-w2" in out.stdout and "at most 1,000,000 (10^6)" in out.stdout
    assert "10,000,000,000 (10^10)" in out.stdout
