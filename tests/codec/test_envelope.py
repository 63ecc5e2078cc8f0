"""Envelopes: one-shot and streamed packing agree; every check rejects what it must."""

from __future__ import annotations

import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from samples import CODEC
from statevault.codec import compression as comp
from statevault.codec.envelope import HEADER_SIZE, pack, pack_pieces, seal, unpack, unseal
from statevault.errors import CorruptionError


def big_state(mb: int) -> dict[str, object]:
    rnd = random.Random(mb)
    words = ["alpha", "beta", "gamma", "delta", "order", "ship", "retry", "agent"]
    return {
        "steps": [
            {"i": i, "text": " ".join(rnd.choice(words) for _ in range(60)), "t": (i, i * 0.5)}
            for i in range(mb * 2500)
        ],
        "blob": os.urandom(1000),
    }


@pytest.mark.parametrize("name", ["zstd", "lz4", "none"])
def test_streamed_large_payload_matches_one_shot(name: str) -> None:
    state = big_state(12)
    raw = CODEC.encode(state)
    assert len(raw) > comp.LARGE_PAYLOAD
    pieces = list(CODEC.encode_pieces(state))
    assert b"".join(pieces) == raw, "the pieces are exactly the one-shot encoding"
    assert len(pieces) > 100
    settings_ = comp.Compression.parse(name)
    streamed = pack_pieces(pieces, settings_)
    assert streamed.digest == pack(raw, settings_).digest
    assert streamed.raw_size == len(raw)
    assert bytes(unpack(streamed.data, streamed.digest).raw) == raw
    if name != "none":
        assert len(streamed.data) < len(raw) / 2


def test_small_payload_is_packed_one_shot() -> None:
    state = {"a": [1, 2, 3], "b": "x" * 500}
    settings_ = comp.Compression.parse("zstd")
    assert pack_pieces(CODEC.encode_pieces(state), settings_) == pack(
        CODEC.encode(state), settings_
    )


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(st.integers() | st.text(), lambda x: st.lists(x) | st.dictionaries(st.text(), x))
)
def test_pieces_always_join_to_the_encoding(value: object) -> None:
    assert b"".join(CODEC.encode_pieces(value)) == CODEC.encode(value)


def test_incompressible_and_tiny_payloads_are_stored_raw() -> None:
    settings_ = comp.Compression.parse("zstd")
    for raw in (b"tiny", os.urandom(10_000)):
        packed = pack(raw, settings_)
        assert packed.data[4] == comp.NONE
        assert len(packed.data) == HEADER_SIZE + len(raw)


def test_explicit_level_applies_to_large_payloads_too() -> None:
    raw = CODEC.encode(big_state(9))
    default = pack(raw, comp.Compression.parse("zstd"))
    explicit = pack(raw, comp.Compression.parse("zstd", level=3))
    assert len(explicit.data) < len(default.data), "level 3 was used, not the large-payload 1"


def test_seal_roundtrip_and_damage() -> None:
    sealed = seal(b"body")
    assert unseal(sealed)[0] == b"body"
    for bad in (sealed[:-1], b"XXXX" + sealed[4:], sealed[:5] + b"!" + sealed[6:], b""):
        with pytest.raises(CorruptionError):
            unseal(bad)
