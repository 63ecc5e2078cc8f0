"""Memory-mapped arrays: `statevault.open(mmap_arrays=True)` + `run.load(mmap=True)`.

An array stored whole comes back read-only over a map of the stored object (no copy)
on the files backend; everywhere else `mmap=True` copies as a plain load does. A
mapped object is checked in full when it is mapped, so damage is still an error.
"""

from __future__ import annotations

import mmap
import os
import pathlib
from typing import Any

import pytest

import statevault

np = pytest.importorskip("numpy")

MIB = 1 << 20


def weights(seed: int = 1, mib: int = 2) -> Any:
    return np.random.default_rng(seed).random((mib * MIB // 8 // 64, 64))


def mapped_view(array: Any) -> memoryview | None:
    """The memoryview at the bottom of an array's base chain, if it views an mmap."""
    base = array
    while isinstance(base, np.ndarray):
        base = base.base
    if isinstance(base, memoryview) and isinstance(base.obj, mmap.mmap):
        return base
    return None


def object_files(root: pathlib.Path) -> dict[str, pathlib.Path]:
    return {p.name: p for p in (root / "objects").glob("*/*") if not p.name.startswith(".")}


@pytest.fixture
def files_vault(tmp_path: pathlib.Path) -> tuple[str, Any]:
    url = f"files://{tmp_path / 'v'}"
    array = weights()
    with statevault.open(url, mmap_arrays=True) as vault:
        vault.run("model").save({"weights": array, "step": 3, "bias": np.arange(4.0)})
    return url, array


def test_an_array_stored_whole_loads_mapped_without_a_copy(files_vault: tuple[str, Any]) -> None:
    url, array = files_vault
    with statevault.open(url) as vault:
        state = vault.run("model").load(mmap=True)
        loaded = state["weights"]
        np.testing.assert_array_equal(loaded, array)
        assert loaded.dtype == array.dtype and loaded.shape == array.shape
        view = mapped_view(loaded)
        assert view is not None, "the array's memory is a map of the stored object"
        assert np.shares_memory(loaded, np.frombuffer(view, dtype=np.uint8))
        assert not loaded.flags.writeable and not loaded.flags.owndata
        with pytest.raises(ValueError, match="read-only"):
            loaded[0, 0] = 1.0
        # A small array lives inside its node: copied, writable as ever.
        assert mapped_view(state["bias"]) is None and state["bias"].flags.writeable
        assert state["step"] == 3


def test_get_and_lazy_views_map_too(files_vault: tuple[str, Any]) -> None:
    url, array = files_vault
    with statevault.open(url) as vault:
        run = vault.run("model")
        got = run.get("weights", mmap=True)
        assert mapped_view(got) is not None
        np.testing.assert_array_equal(got, array)
        lazy = run.load(lazy=True, mmap=True)
        assert mapped_view(lazy["weights"]) is not None


def test_without_mmap_or_where_it_cannot_map_the_array_is_copied(tmp_path: pathlib.Path) -> None:
    array = weights(2)
    files_url = f"files://{tmp_path / 'v'}"
    with statevault.open(files_url, mmap_arrays=True) as vault:
        vault.run("a").save({"w": array})
    with statevault.open(files_url) as vault:
        plain = vault.run("a").load()["w"]
    assert mapped_view(plain) is None and plain.flags.writeable
    np.testing.assert_array_equal(plain, array)
    # Stored in compressed 1 MiB chunks (the default): no single object to map.
    with statevault.open(f"files://{tmp_path / 'chunked'}") as vault:
        vault.run("a").save({"w": array})
        copied = vault.run("a").load(mmap=True)["w"]
    assert mapped_view(copied) is None and copied.flags.writeable
    np.testing.assert_array_equal(copied, array)
    # A backend that cannot map objects copies.
    for url in (str(tmp_path / "v.db"), "memory://"):
        with statevault.open(url, mmap_arrays=True) as vault:
            vault.run("a").save({"w": array})
            copied = vault.run("a").load(mmap=True)["w"]
        assert mapped_view(copied) is None and copied.flags.writeable
        np.testing.assert_array_equal(copied, array)


def test_whole_arrays_are_stored_uncompressed_in_one_object(tmp_path: pathlib.Path) -> None:
    root = tmp_path / "v"
    array = np.zeros(3 * MIB // 8)  # compresses to nothing, but must stay mappable
    with statevault.open(f"files://{root}", mmap_arrays=True) as vault:
        vault.run("a").save({"w": array})
    sizes = sorted(p.stat().st_size for p in object_files(root).values())
    assert sizes[-1] == array.nbytes + 30, "the whole buffer, raw, after the 30-byte envelope"


def test_a_changed_whole_array_loads_after_a_transaction(files_vault: tuple[str, Any]) -> None:
    url, array = files_vault
    with statevault.open(url, mmap_arrays=True) as vault:
        run = vault.run("model")
        with run.transaction() as s:
            s["weights"] = array * 2
        run.checkpoint()
        loaded = vault.run("model").load(mmap=True)["weights"]
        assert mapped_view(loaded) is not None
        np.testing.assert_array_equal(loaded, array * 2)


@pytest.mark.parametrize("where", ["payload", "header", "cut"])
def test_damage_to_a_mapped_object_is_caught(
    files_vault: tuple[str, Any], tmp_path: pathlib.Path, where: str
) -> None:
    url, _ = files_vault
    files = object_files(tmp_path / "v")
    digest, path = max(files.items(), key=lambda item: item[1].stat().st_size)
    data = bytearray(path.read_bytes())
    if where == "payload":
        data[len(data) // 2] ^= 0x01
    elif where == "header":
        data[3] ^= 0x01  # the encoding id: still "uncompressed", now another kind
    else:
        del data[-8:]
    os.chmod(path, 0o644)
    path.write_bytes(bytes(data))
    with statevault.open(url) as vault:
        run = vault.run("model")
        with pytest.raises(statevault.CorruptionError) as caught:
            run.load(mmap=True)
        assert caught.value.digest == digest
        assert caught.value.seq == 1
        with pytest.raises(statevault.CorruptionError):
            run.load()
