"""Envelopes: what is stored raw, which level applies, and every check rejects what it must."""

from __future__ import annotations

import os
import random

import pytest

from samples import CODEC
from statevault.codec import compression as comp
from statevault.codec.envelope import HEADER_SIZE, pack, seal, unseal
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
