"""Checkpoint files already on disk: found by a file-name pattern, read without unpickling.

A pattern is a path relative to the source directory with ``{seed}`` and ``{step}`` (digits) and
``*`` (any characters but ``/``): ``seed{seed}/step_{step}.pt``, ``run-{seed}/checkpoint-{step}``.
A pattern that names a directory takes every checkpoint file inside it as one checkpoint (the
shards of a Hugging Face save: ``model-00001-of-00002.safetensors``, ...). Without ``{seed}`` the
files are one series (seed 0). Checkpoint files are ``.pt``/``.pth``/``.bin`` (``torch.save``-d,
read with ``torch.load(weights_only=True)``: nothing is unpickled) and ``.safetensors``.
Checkpoint files that the pattern does not match are an error that lists them (a half-matching
pattern would import a study with checkpoints missing), except beside matched ones (``final.pt``,
a Hugging Face Trainer's ``optimizer.pt``: use ``checkpoint-{step}/model*.safetensors`` there).
"""

from __future__ import annotations

import io
import re
from collections import defaultdict

import torch

from vt_core.errors import VtError
from vt_core.storage.location import Location, is_remote, location, url

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")
#: keys under which training scripts commonly nest the model's state_dict
NESTED_KEYS = ("state_dict", "model_state_dict", "model", "module")


class CheckpointFilesError(VtError, ValueError):
    """Checkpoint files that cannot be found, matched or read as asked."""


def pattern_regex(pattern: str) -> re.Pattern:
    if "{step}" not in pattern:
        raise CheckpointFilesError(f"pattern {pattern!r} has no {{step}}: name where the step is in the file "
                                   f"names, e.g. 'seed{{seed}}/step_{{step}}.pt'")
    out = ""
    for part in re.split(r"(\{seed\}|\{step\}|\*)", pattern.strip("/")):
        out += {"{seed}": r"(?P<seed>\d+)", "{step}": r"(?P<step>\d+)", "*": r"[^/]*?"}.get(part, re.escape(part))
    return re.compile(out)


def _files(source: Location) -> list[str]:
    """Every checkpoint file under ``source``, relative, with ``/``."""
    if not source.is_dir():
        raise CheckpointFilesError(f"{source} is not a directory of checkpoints")
    base = url(source).rstrip("/")
    out = []
    for p in source.rglob("*"):
        if p.suffix in CHECKPOINT_SUFFIXES and p.is_file():
            out.append(url(p)[len(base) + 1:].replace("\\", "/"))
    return sorted(out)


def find_checkpoints(source: str | Location, pattern: str) -> dict[int, list[tuple[int, list[str]]]]:
    """``{seed: [(step, [file URL, ...]), ...]}``, steps increasing; a directory checkpoint lists
    its files in name order. Raises :class:`CheckpointFilesError` listing the files that do not
    match, or saying that nothing did."""
    source = location(source)
    rx = pattern_regex(pattern)
    found: dict[tuple[int, int], list[str]] = defaultdict(list)
    unmatched = []
    files = _files(source)
    for rel in files:
        parts = rel.split("/")
        for n in range(len(parts), 0, -1):  # the file itself, or a directory above it
            m = rx.fullmatch("/".join(parts[:n]))
            if m:
                seed = int(m.group("seed")) if "seed" in rx.groupindex else 0
                found[(seed, int(m.group("step")))].append(url(source / rel))
                break
        else:
            unmatched.append(rel)
    if not found:
        shown = ", ".join(files[:8]) + (f" (and {len(files) - 8} more)" if len(files) > 8 else "")
        raise CheckpointFilesError(f"no checkpoint under {source} matches the pattern {pattern!r}; checkpoint "
                                   f"files there: {shown or 'none (.pt, .pth, .bin, .safetensors)'}")
    # a file beside matched checkpoints (final.pt, a Trainer's optimizer.pt) is not part of a series
    beside = {f.rsplit("/", 1)[0] for paths in found.values() for f in paths}
    unmatched = [rel for rel in unmatched if url(source / rel).rsplit("/", 1)[0] not in beside]
    if unmatched:
        shown = ", ".join(unmatched[:10]) + (f" (and {len(unmatched) - 10} more)" if len(unmatched) > 10 else "")
        raise CheckpointFilesError(f"{len(unmatched)} checkpoint file(s) under {source} do not match the pattern "
                                   f"{pattern!r}: {shown}; give a pattern that matches every checkpoint (use * "
                                   f"for other parts of a name), or move those files elsewhere")
    series: dict[int, list[tuple[int, list[str]]]] = defaultdict(list)
    for (seed, step), paths in sorted(found.items()):
        series[seed].append((step, sorted(paths)))
    return dict(series)


def _torch_file(f: str) -> dict[str, torch.Tensor]:
    path = location(f)
    try:
        if is_remote(path):
            obj = torch.load(io.BytesIO(path.read_bytes()), map_location="cpu", weights_only=True)
        else:  # memory-mapped: the file is not read into memory twice
            obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # noqa: BLE001 - an unreadable or unsafe file is refused, never unpickled
        raise CheckpointFilesError(f"{f} cannot be read as a state_dict with torch.load(weights_only=True) "
                                   f"({type(err).__name__}: {str(err)[:200]})") from None
    return _state_dict(obj, f)


def _safetensors_file(f: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load, load_file

    path = location(f)
    try:
        return load(path.read_bytes()) if is_remote(path) else load_file(str(path))
    except Exception as err:  # noqa: BLE001 - damaged, or not safetensors
        raise CheckpointFilesError(f"{f} cannot be read as safetensors ({str(err)[:200]})") from None


def _state_dict(obj, name: str) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    if isinstance(obj, dict):
        for key in NESTED_KEYS:
            if isinstance(obj.get(key), dict):
                return _state_dict(obj[key], name)
        keys = list(obj)[:10]
        raise CheckpointFilesError(f"{name} holds a dict whose values are not all tensors (keys {keys}), and no "
                                   f"state_dict under {list(NESTED_KEYS)}")
    raise CheckpointFilesError(f"{name} holds a {type(obj).__name__}, not a state_dict")


def load_checkpoint(files: list[str]) -> dict[str, torch.Tensor]:
    """One checkpoint's tensors, from all its files (shards), on the CPU."""
    out: dict[str, torch.Tensor] = {}
    for f in files:
        part = _safetensors_file(f) if f.endswith(".safetensors") else _torch_file(f)
        clash = sorted(set(part) & set(out))
        if clash:
            raise CheckpointFilesError(f"{f}: tensors {clash[:5]} are also in another file of the same checkpoint")
        out.update(part)
    return out
