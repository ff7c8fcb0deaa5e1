"""A seed's resume file (``runs/seed=NNNN.resume.pt``, beside its store): the state of the last
commit (model, optimizer, RNG; for recorded and imported seeds their position), ``torch.save``-d,
written atomically (a temporary file + rename, or one put on an object store) and sealed with a
trailer holding its length and CRC32C (:func:`vt_core.storage.run_integrity.seal`). Read with
``weights_only=True``: nothing is unpickled. A file inside the store would make zarr warn."""

from __future__ import annotations

import io
from dataclasses import dataclass

from vt_core.storage.location import Location, write_bytes_atomic
from vt_core.storage.run_integrity import ResumeDamagedError, check_trailer, seal, unseal


@dataclass(frozen=True)
class Position:
    """The resume state of a recorded or imported seed: the step of its last commit and its number
    of checkpoints, saved as ``{"position": tensor([step, checkpoints])}``. Plain numbers on their
    way to the writer: the recording loop does not pay for ``torch.save`` (0.4 ms a checkpoint in
    the demo's loop, benchmarks/RESULTS.md); the writer serialises it."""

    step: int
    checkpoints: int

    def state(self) -> dict:
        import torch

        return {"position": torch.tensor([self.step, self.checkpoints], dtype=torch.int64)}


def save(f: Location, state: dict | bytes | Position) -> None:
    """Write ``state`` (a state dict, a :class:`Position`, or a state already ``torch.save``-d to
    bytes), sealed."""
    if isinstance(state, Position):
        state = state.state()
    if not isinstance(state, bytes):
        import torch

        buf = io.BytesIO()
        torch.save(state, buf)
        state = buf.getvalue()
    write_bytes_atomic(f, seal(state))


def problem(f: Location, read: bool = True) -> str | None:
    """Why the file is damaged (None: it is not, or there is none). Without ``read`` only its
    trailer is read (a truncated file is found; a flipped bit needs ``read``)."""
    if not f.is_file():
        return None
    try:
        if read:
            unseal(f.read_bytes(), f.name)
        else:
            with f.open("rb") as fh:
                size = fh.seek(0, 2)
                fh.seek(max(0, size - 64))
                tail = fh.read()
            check_trailer(tail, size, f.name)
    except ResumeDamagedError as err:
        return str(err)
    return None


def load(f: Location) -> dict | None:
    """The state (None: no file yet), verified against its checksum; :class:`ResumeDamagedError`
    for a file that fails it or does not decode."""
    import torch

    if not f.is_file():
        return None
    data = unseal(f.read_bytes(), str(f))
    try:
        return torch.load(io.BytesIO(data), weights_only=True)
    except Exception as err:  # noqa: BLE001 - any undecodable file is damage
        raise ResumeDamagedError(f"resume file {f} is damaged ({type(err).__name__}: {str(err)[:120]})") from None
