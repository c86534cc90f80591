"""The gate's rules: names judged whole, values quoted short, files read with a cap."""

import pytest

from lab import gate


@pytest.mark.parametrize(
    "rule, good",
    [
        (gate.HOST, "init"),
        (gate.LINK, "wan1"),
        (gate.LAB, "scn-1a2b"),
        (gate.FQDN, "init.example.com"),
        (gate.BYTES, "64K"),
        (gate.FILE, "site.yaml"),
        (gate.RELEASE, "7.9"),
        (gate.RATE, "1mbit"),
    ],
)
def test_a_name_is_judged_whole(rule, good):
    assert rule.problem(good) is None
    for bad in (good + "\n", "\n" + good, good + "\x00", good + "/..", "", None, 7, [good]):
        assert rule.problem(bad), repr(bad)


def test_shown_never_writes_out_a_big_value():
    assert gate.shown("a\nb\x03") == "'a\\nb\\x03'"
    assert gate.shown("x" * 10_000) == repr("x" * gate.SHOWN) + "…"
    nested: list = ["lol"] * 9
    for _ in range(30):  # 9^30 items if expanded
        nested = [nested] * 9
    assert gate.shown(nested) == "a list" and gate.shown({"a": nested}) == "a mapping"


def test_a_fqdn_is_at_most_253_characters():
    label = "a" * 60
    assert gate.FQDN.problem(".".join([label] * 4)) is None  # 243
    assert gate.FQDN.problem(".".join([label] * 5))  # 304


def test_reading_a_user_file_caps_it_and_wants_text(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"ok\x03\x1a\r\n")
    assert gate.read_text(path, 100) == "ok\x03\x1a\r\n"  # control characters are text
    path.write_bytes(b"x" * 101)
    with pytest.raises(gate.GateError, match="larger than"):
        gate.read_text(path, 100)
    with pytest.raises(gate.GateError, match=r"^cannot read the file: No such file"):
        gate.read_text(tmp_path / "missing", 100)


def test_a_users_regex_that_does_not_compile_is_one_line():
    with pytest.raises(gate.GateError, match=r"^--expect-failure '\(': not a regular expression"):
        gate.regex("(", "--expect-failure")
