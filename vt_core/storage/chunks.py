"""The chunk layout of a run store's arrays, and whole chunks written straight to a local disk in
zarr v3's own format.

Layout (:func:`rows_per_chunk`, :func:`codecs`, :data:`CHUNK_KEYS`): scalars 512 checkpoints to a
chunk, zstd then CRC32C; other arrays as many checkpoints as fit in :data:`CHUNK_BYTES` (a power of
two, at most 64; one for large rows), raw bytes then CRC32C; chunk files ``c.<row>.0...``.

Why: zarr's ``Array.__setitem__`` costs ~1 ms of CPU per chunk and ~2.5 ms per call (its async
machinery, a thread hop per chunk, a temporary file per chunk), whatever the chunk's size. A
checkpoint of the demo's MLP is ~10 chunks, so the writer process spent 1.5-2 s of CPU on 101
checkpoints: free on a quiet 2-core machine, but on a shared one that CPU is taken from the training
loop (benchmarks/RESULTS.md, issue 21). Here a chunk is encoded as zarr encodes it, by the codecs
its metadata names: the raw little-endian bytes (``bytes``), optionally zstd (``numcodecs.Zstd``,
the library zarr's ``ZstdCodec`` calls), then the CRC32C of those bytes appended little-endian
(``crc32c``); it is written to a temporary file in its directory and renamed over the chunk's key,
so that a reader sees the old chunk or the new one, never a part (as zarr's ``LocalStore`` does).

Only arrays whose metadata is exactly one of those codec chains, on a regular grid whose chunks
span every dimension after the first, in a local directory, are written here; :func:`direct`
returns None for anything else and the caller writes through zarr. Reading is zarr's, and
:func:`vt_core.storage.run_integrity.check_store` verifies what was written here like anything else;
the live watcher alone reads its few new rows here too (:meth:`DirectChunks.get`, checksums verified).

A chunk that holds several rows and is only partly written is read back from disk (its checksum
verified) when more rows are written to it, and written whole again. A writer that owns the store
for a whole run (:class:`~vt_core.storage.writer_thread.CheckpointWriter`, in the writer process) holds
the chunk being filled in memory instead (``hold``: up to ``CHUNK_BYTES`` per array, 0.15 s of the
demo's writer CPU saved); an import, whose memory is one checkpoint, does not.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import zarr

from vt_core.errors import VtError

#: scalars (rows of <= 64 bytes): this many checkpoints to a chunk
SMALL_ROW_CHUNK = 512
#: at most this many bytes in a chunk of an array recorded at every checkpoint (weights,
#: activations): a checkpoint no longer costs a file per array (creating a file is the writer's
#: main cost on ext4, benchmarks/RESULTS.md, issue 21), and reading a block of checkpoints for the
#: metrics stays one read per chunk. Larger rows get a chunk each.
CHUNK_BYTES = 2 * 2**20
MAX_ROWS_PER_CHUNK = 64


def rows_per_chunk(row_bytes: int) -> int:
    """Checkpoints per chunk for rows of ``row_bytes``: 512 for scalars, else a power of two with
    at most :data:`CHUNK_BYTES` per chunk (at most 64; 1 for rows of more than half of it)."""
    if row_bytes <= 64:
        return SMALL_ROW_CHUNK
    fit = CHUNK_BYTES // max(row_bytes, 1)
    return 1 if fit < 2 else min(MAX_ROWS_PER_CHUNK, 1 << (int(fit).bit_length() - 1))


#: write a chunk even when it equals the fill value: a chunk missing on disk is then always damage
WRITE_ALL = {"write_empty_chunks": True}

#: chunk files named ``c.<row>.0.0`` in the array's directory, not ``c/<row>/0/0``: on ext4 making
#: the two directories of each new checkpoint cost 3x the write of its bytes.
#: Stores written before keep their ``/`` keys (zarr reads the encoding from each array's metadata).
CHUNK_KEYS = {"name": "default", "separator": "."}


def codecs(compress: bool) -> list:
    """zstd (only for arrays of small rows, 512 to a chunk: trained float32 weights compress by
    ~6% for twice the write and read time, and a chunk of several checkpoints is compressed again
    at every commit while it fills: zstd was a fifth of the writer's CPU for activations), then a
    CRC32C checksum of the stored bytes, always."""
    from zarr.codecs import Crc32cCodec, ZstdCodec

    return [ZstdCodec(level=0), Crc32cCodec()] if compress else [Crc32cCodec()]


class ChunkError(VtError, OSError):
    """A chunk on disk that is about to be updated fails its checksum or cannot be decoded."""


def direct(arr: zarr.Array, root: object, hold: bool = False) -> DirectChunks | None:
    """A direct writer for ``arr`` of the store at ``root`` (a local :class:`~pathlib.Path`), or
    None where its format is not one this module writes (the caller then writes through zarr).
    ``hold``: keep the chunk being filled in memory between writes (module docstring)."""
    if not isinstance(root, Path):
        return None
    from zarr.codecs import BytesCodec, Crc32cCodec, ZstdCodec
    from zarr.core.chunk_grids import RegularChunkGrid

    meta = arr.metadata
    if getattr(meta, "zarr_format", None) != 3 or not isinstance(meta.chunk_grid, RegularChunkGrid):
        return None
    chain = list(meta.codecs)
    if len(chain) not in (2, 3) or not isinstance(chain[0], BytesCodec) or not isinstance(chain[-1], Crc32cCodec):
        return None
    zstd = None
    if len(chain) == 3:
        if not isinstance(chain[1], ZstdCodec) or chain[1].checksum:
            return None
        from numcodecs.zstd import Zstd

        zstd = Zstd(level=chain[1].level)
    dtype = np.dtype(arr.dtype)
    if dtype.hasobject or dtype.kind not in "biufc" or arr.ndim < 1:
        return None
    if chain[0].endian is not None and dtype.itemsize > 1:
        dtype = dtype.newbyteorder("<" if chain[0].endian.value == "little" else ">")
    chunks = tuple(meta.chunk_grid.chunk_shape)
    if tuple(chunks[1:]) != tuple(arr.shape[1:]):
        return None  # only chunks that span every dimension after the first
    return DirectChunks(arr, root / arr.path, dtype, chunks, zstd, hold)


class DirectChunks:
    """Writes rows of one array, whole chunks at a time (module docstring)."""

    def __init__(self, arr: zarr.Array, directory: Path, dtype: np.dtype, chunks: tuple[int, ...], zstd,
                 hold: bool = False) -> None:
        self.arr, self.dir, self.dtype, self.chunks, self.zstd = arr, directory, dtype, chunks, zstd
        self.rows_per_chunk = int(chunks[0])
        self.fill = np.asarray(arr.metadata.fill_value, dtype=np.dtype(arr.dtype))
        self._made: set[Path] = set()
        self.hold = hold
        self._held: tuple[int, np.ndarray] | None = None  # (chunk index, its rows) of the chunk being filled

    def _file(self, index: int) -> Path:
        return self.dir / self.arr.metadata.encode_chunk_key((index,) + (0,) * (len(self.chunks) - 1))

    def _encode(self, chunk: np.ndarray) -> tuple[bytes | np.ndarray, bytes]:
        data = np.ascontiguousarray(chunk, dtype=self.dtype)
        payload: bytes | np.ndarray = data.reshape(-1).view(np.uint8)
        if self.zstd is not None:
            payload = self.zstd.encode(payload)
        import google_crc32c

        return payload, struct.pack("<I", google_crc32c.value(payload))

    def _decode(self, raw: bytes, f: Path, rows: slice = slice(None)) -> np.ndarray:
        import google_crc32c

        body, crc = raw[:-4], raw[-4:]
        if len(raw) < 4 or struct.pack("<I", google_crc32c.value(body)) != crc:
            raise ChunkError(f"chunk {f} fails its checksum (the stored bytes changed); verify the store "
                             f"(vt validate) before writing more")
        try:
            if self.zstd is not None:
                body = self.zstd.decode(body)
            return np.frombuffer(body, dtype=self.dtype).reshape(self.chunks)[rows].astype(np.dtype(self.arr.dtype))
        except (ValueError, RuntimeError) as err:
            raise ChunkError(f"chunk {f} cannot be decoded ({err})") from None

    def _write(self, f: Path, chunk: np.ndarray) -> None:
        payload, crc = self._encode(chunk)
        if f.parent not in self._made:
            f.parent.mkdir(parents=True, exist_ok=True)
            self._made.add(f.parent)
        tmp = f.with_name(f".{f.name}.{os.getpid()}.partial")
        with open(tmp, "wb") as fh:
            fh.write(payload if isinstance(payload, bytes) else payload.data)
            fh.write(crc)
        os.replace(tmp, f)

    def _chunk(self, index: int, whole: bool) -> np.ndarray:
        """The rows of many-row chunk ``index`` as stored (the fill value where none was written);
        not read where the rows to write fill it (``whole``), nor where it is held."""
        if self._held is not None and self._held[0] == index:
            return self._held[1]
        f = self._file(index)
        if not whole and f.is_file():
            rows = self._decode(f.read_bytes(), f).copy()
        else:
            rows = np.full(self.chunks, self.fill, dtype=np.dtype(self.arr.dtype))
        if self.hold:
            self._held = (index, rows)
        return rows

    def get(self, lo: int, hi: int) -> np.ndarray:
        """Rows ``lo .. hi`` as stored, each chunk read straight from its file and its checksum
        verified: the live watcher reads a few new rows of a few small arrays at every look, and
        zarr's per-call cost (a thread hop per call and per chunk) was most of a look's CPU. A
        chunk missing is damage (every chunk is written, :data:`WRITE_ALL`)."""
        r, parts = self.rows_per_chunk, []
        for c in range(lo // r, (hi - 1) // r + 1) if hi > lo else ():
            f = self._file(c)
            try:
                raw = f.read_bytes()
            except FileNotFoundError:
                raise ChunkError(f"chunk {f} is missing (a committed row's chunk is always written); "
                                 f"vt validate names the damage") from None
            parts.append(self._decode(raw, f, slice(max(lo - c * r, 0), min(hi - c * r, r))))
        return np.concatenate(parts) if parts else np.empty((0, *self.chunks[1:]), dtype=np.dtype(self.arr.dtype))

    def put(self, rows: np.ndarray, start: int) -> None:
        """Write ``rows`` at rows ``start ..`` (the array is already large enough)."""
        r = self.rows_per_chunk
        end = start + len(rows)
        if r == 1:
            for i in range(len(rows)):
                self._write(self._file(start + i), rows[i])
            return
        for c in range(start // r, (end - 1) // r + 1):
            lo, hi = max(start, c * r), min(end, (c + 1) * r)
            chunk = self._chunk(c, whole=hi - lo == r)
            chunk[lo - c * r:hi - c * r] = rows[lo - start:hi - start]
            self._write(self._file(c), chunk)
