"""Compression of object payloads: zstd by default, lz4 as the fast choice, or none.

Small and incompressible payloads are stored as they are: compressing 40 bytes
costs more than it saves, and already-compressed media only burns CPU.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Literal

import lz4.frame
import zstandard

from statevault.errors import CorruptionError

CompressionName = Literal["zstd", "lz4", "none"]

NONE, ZSTD, LZ4, ZSTD_DICTIONARY = 0, 1, 2, 3
"""Compression ids as stored in envelopes. Never renumber: old vaults use them.
`ZSTD_DICTIONARY` is zstd against a dictionary of stored content (envelope version 2)."""


MIN_COMPRESS = 96
"""Payloads shorter than this are stored raw: a zstd frame header alone is ~10 bytes."""

_KEEP_RATIO = 0.95
"""Compressed output must be at most this fraction of the input to be kept."""

_THREADED_FROM = 8 << 20
"""zstd compresses payloads above 8 MiB on every core (1.6-1.9x faster on two here)."""

DEFAULT_LEVELS = {"zstd": 3, "lz4": 0, "none": 0}
"""zstd level 3: on typical state it keeps ~0.64 of the bytes out at ~300 MB/s; higher
levels gain a few percent for several times the CPU (docs/performance.md)."""

LARGE_PAYLOAD = 8 << 20
LARGE_ZSTD_LEVEL = 1
"""With no level given, payloads of 8 MiB and more use zstd level 1: on 100 MB of typical
state it compresses ~1.5x faster than level 3 for 36% of the JSON size instead of 31%,
which keeps a large save near the disk's speed instead of the compressor's."""


@dataclass(frozen=True, slots=True)
class Compression:
    """A compression setting: algorithm and level.

    Example:
        >>> Compression.parse("zstd", level=1).compress(b"a" * 1000)[0]
        1
    """

    name: CompressionName = "zstd"
    level: int = 3
    level_for_large: int | None = LARGE_ZSTD_LEVEL
    """The level for payloads of `LARGE_PAYLOAD` bytes and more; None: always `level`."""

    @staticmethod
    def parse(name: str, *, level: int | None = None) -> Compression:
        """Validate user options into a `Compression`, with a clear error on bad input."""
        if name not in DEFAULT_LEVELS:
            raise ValueError(f"compression must be one of 'zstd', 'lz4', 'none'; got {name!r}")
        if level is None:
            return Compression(name, DEFAULT_LEVELS[name])  # type: ignore[arg-type]  # checked above
        if name == "zstd" and not (-7 <= level <= 22):
            raise ValueError(f"zstd level must be between -7 and 22; got {level}")
        if name == "lz4" and not (0 <= level <= 16):
            raise ValueError(f"lz4 level must be between 0 and 16; got {level}")
        return Compression(name, level, None)  # type: ignore[arg-type]  # checked above

    def compress(
        self, raw: bytes | memoryview, *, large: bool | None = None
    ) -> tuple[int, bytes | memoryview]:
        """Return (compression id, payload). The payload may be `raw` itself.

        `large` says the payload is part of a large value (a chunk of a long list), so
        it gets the large-payload level; None decides by the payload's own size.
        """
        if self.name == "none" or len(raw) < MIN_COMPRESS:
            return NONE, raw
        if self.name == "zstd":
            level = self.level
            if large is None:
                large = len(raw) >= LARGE_PAYLOAD
            if self.level_for_large is not None and large:
                level = self.level_for_large
            packed = _zstd_compressor(level, threaded=len(raw) >= _THREADED_FROM).compress(raw)
            cid = ZSTD
        else:
            packed = lz4.frame.compress(raw, compression_level=self.level, store_size=True)
            cid = LZ4
        if len(packed) > len(raw) * _KEEP_RATIO:
            return NONE, raw
        return cid, packed


class ContentDictionary:
    """Raw content that payloads are compressed against (zstd, no training).

    zstd finds a payload's matches in the content as if the content preceded it: a
    journal entry compressed against the state entry that later holds its change
    costs tens of bytes instead of a compressed copy of the change. Not thread-safe:
    one user at a time.
    """

    def __init__(self, content: bytes, *, level: int = DEFAULT_LEVELS["zstd"]) -> None:
        self.size = len(content)
        self._dictionary = zstandard.ZstdCompressionDict(
            content, dict_type=zstandard.DICT_TYPE_RAWCONTENT
        )
        self._level = level
        self._compressor: zstandard.ZstdCompressor | None = None
        self._decompressor: zstandard.ZstdDecompressor | None = None

    def compress(self, raw: bytes | memoryview) -> bytes:
        """`raw` as one zstd frame against the content (without a dictionary id)."""
        if self._compressor is None:
            # Indexing the content once, not once per payload, is what makes compressing
            # a hundred payloads against it cheap (~2 us each for 2 KB against 224 KB).
            self._dictionary.precompute_compress(level=self._level)
            self._compressor = zstandard.ZstdCompressor(
                dict_data=self._dictionary, write_content_size=True, write_dict_id=False
            )
        return self._compressor.compress(raw)

    def decompress(self, payload: bytes | memoryview, raw_length: int) -> bytes:
        if self._decompressor is None:
            self._decompressor = zstandard.ZstdDecompressor(dict_data=self._dictionary)
        return self._decompressor.decompress(payload, max_output_size=raw_length)


_local = threading.local()


def _zstd_compressor(level: int, *, threaded: bool) -> zstandard.ZstdCompressor:
    # zstandard compressor objects are not thread-safe but are costly to build, so each
    # thread keeps its own per level.
    cache: dict[tuple[int, bool], zstandard.ZstdCompressor] | None = getattr(
        _local, "compressors", None
    )
    if cache is None:
        cache = _local.compressors = {}
    key = (level, threaded)
    compressor = cache.get(key)
    if compressor is None:
        compressor = zstandard.ZstdCompressor(
            level=level, threads=-1 if threaded else 0, write_content_size=True
        )
        cache[key] = compressor
    return compressor


def _zstd_decompressor() -> zstandard.ZstdDecompressor:
    decompressor: zstandard.ZstdDecompressor | None = getattr(_local, "decompressor", None)
    if decompressor is None:
        decompressor = _local.decompressor = zstandard.ZstdDecompressor()
    return decompressor


def decompress(
    cid: int,
    payload: bytes | memoryview,
    raw_length: int,
    *,
    dictionary: ContentDictionary | None = None,
) -> bytes | memoryview:
    """Undo `compress` (or `compress_with`); the result must be exactly `raw_length` bytes.

    Raises:
        CorruptionError: unknown compression id, or the payload does not decompress to
            `raw_length` bytes.
    """
    try:
        if cid == NONE:
            out: bytes | memoryview = payload
        elif cid == ZSTD:
            out = _zstd_decompressor().decompress(payload, max_output_size=raw_length)
        elif cid == LZ4:
            out = lz4.frame.decompress(payload)
        elif cid == ZSTD_DICTIONARY and dictionary is not None:
            out = dictionary.decompress(payload, raw_length)
        else:
            raise CorruptionError(f"unknown compression id {cid}")
    except (zstandard.ZstdError, RuntimeError, ValueError) as exc:
        if isinstance(exc, CorruptionError):
            raise
        raise CorruptionError(f"payload does not decompress ({exc})") from exc
    if len(out) != raw_length:
        raise CorruptionError(
            f"payload decompresses to {len(out)} bytes, the envelope says {raw_length}"
        )
    return out
