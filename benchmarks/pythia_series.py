"""Checkpoint series shaped like PolyPythias, built here (issue 31, item 1): nothing from a hub.

Each checkpoint is a Hugging Face save of a GPT-NeoX model at a Pythia size: ``config.json`` and
the weights as safetensors shards (``model-00001-of-0000N.safetensors`` with
``model.safetensors.index.json``, as ``save_pretrained`` writes a save larger than its shard size),
with exactly the parameter names and shapes of ``transformers``' ``GPTNeoXForCausalLM`` built from
the size's config (taken from a model built on the meta device: no memory, no download). The
weights start as GPT-NeoX initialises them (normal(0, 0.02) matrices and embeddings, unit norm
weights, zero biases) and drift over steps: a seeded random walk plus a low-rank component that
grows with the step (so the spectra, ranks and norms the metrics read move), one series per seed::

    SOURCE/seed{seed}/step{step}/config.json
    SOURCE/seed{seed}/step{step}/model-0000i-of-0000N.safetensors
    SOURCE/seed{seed}/step{step}/model.safetensors.index.json

which ``vt import --from SOURCE --pattern 'seed{seed}/step{step}' --factory
benchmarks.pythia_series:pythia_70m`` (or without ``--factory``) reads.

    python benchmarks/pythia_series.py OUT --size 160m --seeds 10 --steps 0,1000,...  [--dtype float16]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

#: the Pythia suite's sizes (Biderman et al. 2023, Table 1): hidden size, layers, heads
SIZES = {"70m": (512, 6, 8), "160m": (768, 12, 12), "410m": (1024, 24, 16)}
VOCAB = 50304
SHARD_BYTES = 2 * 10**8  # shards of at most 200 MB (save_pretrained's max_shard_size)


def neox_config(size: str):
    from transformers import GPTNeoXConfig

    hidden, layers, heads = SIZES[size]
    return GPTNeoXConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                         intermediate_size=4 * hidden, vocab_size=VOCAB, max_position_embeddings=2048,
                         rotary_pct=0.25, use_parallel_residual=True, tie_word_embeddings=False)


def _model(size: str):
    from transformers import GPTNeoXForCausalLM

    return GPTNeoXForCausalLM(neox_config(size))


def pythia_70m():
    """The model factory for ``--factory benchmarks.pythia_series:pythia_70m`` (random weights)."""
    return _model("70m")


def pythia_160m():
    return _model("160m")


def pythia_410m():
    return _model("410m")


def parameter_shapes(size: str) -> dict[str, tuple[int, ...]]:
    """Every parameter's name and shape, as ``GPTNeoXForCausalLM(config).state_dict()`` has them
    (parameters only: what ``save_pretrained`` writes), from a model built on the meta device."""
    import torch
    from transformers import GPTNeoXForCausalLM

    with torch.device("meta"):
        model = GPTNeoXForCausalLM(neox_config(size))
    return {name: tuple(p.shape) for name, p in model.named_parameters()}


def checkpoint_bytes(size: str, dtype: str = "float32") -> int:
    return sum(int(np.prod(s)) for s in parameter_shapes(size).values()) * np.dtype(dtype).itemsize


def _initial(name: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    if name.endswith(".bias"):
        return np.zeros(shape, dtype=np.float32)
    if "layernorm" in name or "layer_norm" in name:
        return np.ones(shape, dtype=np.float32)
    return (rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02))


def series(size: str, seed: int, steps: list[int]) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """``(step, state)`` for each of ``steps``, one state in memory at a time (float32). Between two
    steps every tensor takes a random-walk step of 2e-4 * sqrt(steps between / 1000); every matrix
    also gains a rank-2 component whose size grows as log(1 + step / 1000) (its spectrum's top
    moves away from the bulk: effective and stable ranks fall, the spectral norm grows)."""
    shapes = parameter_shapes(size)
    rng = np.random.default_rng([seed, 31])
    state = {n: _initial(n, s, rng) for n, s in shapes.items()}
    directions = {n: (rng.standard_normal((s[0], 2), dtype=np.float32), rng.standard_normal((2, s[1]), dtype=np.float32))
                  for n, s in shapes.items() if len(s) == 2}
    last, grown = 0, 0.0
    for step in steps:
        walk = np.float32(2e-4 * np.sqrt(max(step - last, 0) / 1000))
        growth = np.float32(0.004 * (np.log1p(step / 1000) - grown))
        for n, w in state.items():
            w += walk * rng.standard_normal(w.shape, dtype=np.float32)
            if n in directions:
                u, v = directions[n]
                w += growth * (u @ v)
        last, grown = step, float(np.log1p(step / 1000))
        yield step, state


def save(state: dict[str, np.ndarray], out: Path, size: str, dtype: str = "float32") -> int:
    """One Hugging Face save of ``state`` under ``out``: sharded safetensors with their index and
    the config; returns the bytes of weights written."""
    import torch
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    shards: list[dict[str, torch.Tensor]] = [{}]
    size_of = [0]
    for name, w in state.items():
        t = torch.from_numpy(w).to(getattr(torch, dtype))
        nbytes = t.numel() * t.element_size()
        if size_of[-1] and size_of[-1] + nbytes > SHARD_BYTES:
            shards.append({})
            size_of.append(0)
        shards[-1][name] = t
        size_of[-1] += nbytes
    weight_map = {}
    for i, shard in enumerate(shards, 1):
        fname = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(out / fname), metadata={"format": "pt"})
        weight_map |= dict.fromkeys(shard, fname)
    (out / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": sum(size_of)}, "weight_map": weight_map}, indent=2))
    cfg = neox_config(size).to_dict() | {"architectures": ["GPTNeoXForCausalLM"], "torch_dtype": dtype}
    (out / "config.json").write_text(json.dumps(cfg, indent=2, default=str))
    return sum(size_of)


def write_series(out: Path, size: str, seeds: list[int], steps: list[int], dtype: str = "float32") -> int:
    """Every seed's series under ``out`` (layout in the module docstring); the bytes written."""
    total = 0
    for seed in seeds:
        for step, state in series(size, seed, steps):
            total += save(state, out / f"seed{seed}" / f"step{step}", size, dtype)
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--size", choices=sorted(SIZES), default="160m")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--steps", default=",".join(str(s) for s in [0, *range(1000, 20_000, 1000)]))
    ap.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32")
    args = ap.parse_args()
    n = write_series(args.out, args.size, list(range(args.seeds)), [int(s) for s in args.steps.split(",")], args.dtype)
    print(json.dumps({"bytes": n, "size": args.size, "seeds": args.seeds}))


if __name__ == "__main__":
    main()
