"""Redactor: secrets from the env file never leave the process."""

from __future__ import annotations

import json
import random

import pytest
from runform.redact import MASK, Redactor


@pytest.fixture
def red() -> Redactor:
    return Redactor.from_env({"B2_APP_KEY": "K005abcdefSECRET", "SHORT": "abc", "EMPTY": "",
                              "PART": "abcdef", "WANDB_API_KEY": "w" * 40, "SPACE": "p@ss word/+"})


def test_strings_longest_first_and_short_values_skipped(red: Redactor):
    assert red("key=K005abcdefSECRET;") == "key=***;"
    assert red("abc and abcdef") == "abc and ***"  # 'abc' is too short to mask
    assert red("K005abcdef") == "K005***"  # the shorter secret inside a longer word
    assert red("x" + "w" * 40 + "x") == "x***x"
    assert red("") == "" and red("nothing here") == "nothing here"


def test_bytes(red: Redactor):
    assert red(b"token K005abcdefSECRET\n") == b"token ***\n"
    assert red.redact_bytes(bytearray(b"abcdef")) == b"***"


def test_nested_json(red: Redactor):
    doc = {"argv": ["--key", "K005abcdefSECRET"], "env": {"abcdef": 1},
           "n": 3, "ok": True, "none": None, "t": ("abcdef",)}
    out = red.redact_json(doc)
    assert out == {"argv": ["--key", "***"], "env": {"***": 1}, "n": 3, "ok": True,
                   "none": None, "t": ["***"]}
    assert "abcdef" not in json.dumps(out)


def test_encoded_spellings(red: Redactor):
    assert red("url?k=p%40ss%20word%2F%2B") == "url?k=***"
    assert red("form=p%40ss+word%2F%2B") == "form=***"
    assert red(json.dumps({"k": 'a"b\\c' * 2})) == json.dumps({"k": 'a"b\\c' * 2})
    quoted = Redactor(['se"cret\\x'])
    assert MASK in quoted(json.dumps({"k": 'se"cret\\x'}))


def test_repr_hides_secrets(red: Redactor):
    assert "SECRET" not in repr(red) and "SECRET" not in str(red)


def test_empty_redactor_is_identity():
    r = Redactor()
    assert r("K005abcdefSECRET") == "K005abcdefSECRET" and r({"a": [1]}) == {"a": [1]}
    assert r.stream().feed(b"abc") == b"abc"


def test_stream_catches_secrets_split_across_chunks(red: Redactor):
    text = (b"log: K005abcdefSECRET then abcdef and " + b"w" * 40 + b" end abcde") * 3
    expected = red.redact_bytes(text)
    rng = random.Random(7)
    for _ in range(50):
        s = red.stream()
        out, pos = b"", 0
        while pos < len(text):
            n = rng.randint(1, 9)
            out += s.feed(text[pos:pos + n])
            pos += n
        out += s.flush()
        assert out == expected


def test_extend(red: Redactor):
    more = red.extend(["new-secret-1"])
    assert more("new-secret-1 K005abcdefSECRET") == "*** ***"
    assert red("new-secret-1") == "new-secret-1"
