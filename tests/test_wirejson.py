"""gateway/wirejson.py: orjson's speed, with exactly what ``json`` accepts, rejects and says, except
the non-finite numbers JSON does not have, which a client's body may not hold."""

from __future__ import annotations

import json

import pytest

from gateway import wirejson

ACCEPTED = [
    b'{"model": "m", "messages": [{"role": "user", "content": "caf\\u00e9 \xe2\x82\xac"}], "temperature": 0.7}',
    b'{"seed": 18446744073709551615, "low": -9223372036854775808}',
    b'{"a": 1, "a": 2}',
    '{"utf16": "yes"}'.encode("utf-16"),
    b'\xef\xbb\xbf{"bom": true}',
    b"[" * 500 + b"]" * 500,
    b'{"a": "\xed\xa0\x80"}',
    b' \n{"spaced": [1, 2.5, true, null]}\t',
]

# json reads these as nan, inf and -inf; orjson refuses them.
NON_FINITE = [
    (b'{"temperature": NaN}', "NaN"),
    (b'{"top_p": Infinity}', "Infinity"),
    (b'{"x": [1, -Infinity]}', "-Infinity"),
    (b'{"n": 1e400}', "1e400"),
    (b'{"n": -1e400}', "-1e400"),
    ('{"utf16": NaN}'.encode("utf-16"), "NaN"),
]

REJECTED = [b"", b"{", b"{'single': 1}", b'{"a": 1,}', b"\xff\xfe\xfd", b"[" * 1100 + b"]" * 1100]


@pytest.mark.parametrize("raw", ACCEPTED, ids=range(len(ACCEPTED)))
def test_what_json_accepts_reads_the_same(raw: bytes) -> None:
    # json writes what each read back, NaN, int-or-float and key order included
    assert json.dumps(wirejson.loads(raw)) == json.dumps(json.loads(raw))


@pytest.mark.parametrize("raw", REJECTED, ids=range(len(REJECTED)))
def test_what_json_rejects_fails_with_jsons_own_error(raw: bytes) -> None:
    with pytest.raises((ValueError, RecursionError)) as expected:
        json.loads(raw)
    with pytest.raises(type(expected.value)) as got:
        wirejson.loads(raw)
    assert str(got.value) == str(expected.value)


@pytest.mark.parametrize(("raw", "literal"), NON_FINITE, ids=[lit for _, lit in NON_FINITE])
def test_a_client_body_may_not_hold_nan_or_infinity_but_an_engine_answer_may(raw: bytes, literal: str) -> None:
    with pytest.raises(ValueError, match=literal.lstrip("-")) as refused:
        wirejson.loads(raw)
    assert "JSON" in str(refused.value) or "64-bit" in str(refused.value)
    assert json.dumps(wirejson.loads_lenient(raw)) == json.dumps(json.loads(raw))


def test_integers_past_64_bits_read_as_floats_the_one_difference() -> None:
    # orjson reads them as floats and has no switch to refuse them; no OpenAI parameter takes one.
    assert wirejson.loads(b'{"seed": 123456789012345678901234567890}') == {"seed": 1.2345678901234568e29}


def test_written_bodies_read_back_as_what_was_written() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "caf\u00e9"}], "seed": 2**70, "t": 0.1}
    assert json.loads(wirejson.dumps(body)) == body  # past 64 bits, json writes it
    small = {"model": "m", "n": 1, "t": 0.1, "ok": True, "none": None}
    assert wirejson.dumps(small) == b'{"model":"m","n":1,"t":0.1,"ok":true,"none":null}'
