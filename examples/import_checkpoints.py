"""Checkpoints you already have, imported as a vt study: this script first makes a directory of them
the way Hugging Face (and PolyPythias) publish a run, then imports it with `vt import`.

    PYTHONPATH=. python examples/import_checkpoints.py studies/imported      # 6 seeds, ~1 min on 2 cores

It trains a tiny GPT-NeoX (built locally from a ``transformers`` config: ``examples/neox.py``; nothing
from a hub) to predict the next token of a repeating sequence, 6 seeds, and saves it every 10 steps
as ``checkpoints/seed{seed}/checkpoint-{step}/model-0000N-of-0000M.safetensors``. `vt import` then
reads them one checkpoint at a time (one Prefect task per seed), records every MLP's activations on
a probe batch through the same factory, and analyses the study. Run it again: nothing is imported
twice.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

from examples.neox import tiny_gpt_neox

MODEL = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 256,
         "vocab_size": 64}


#: what the HMM models: a few of the paper's weight metrics with diagonal covariances, which 6 seeds
#: x 26 checkpoints support (the paper's 14 with full covariances need far more); imported files hold
#: no held-out accuracy, so there is no convergence step and no detour test
HMM = {"covariance": "diag", "features": ["l2", "spectral", "code_sparsity", "var_w"],
       "max_states": 6}


def batch(gen: torch.Generator, n: int = 16, length: int = 32) -> torch.Tensor:
    """Sequences that repeat a random 8-token pattern: learnable in a few hundred steps."""
    pattern = torch.randint(0, MODEL["vocab_size"], (n, 8), generator=gen)
    return pattern.repeat(1, length // 8)


def make_checkpoints(out: Path, seeds: int, steps: int, every: int) -> None:
    for seed in range(seeds):
        if (out / f"seed{seed}" / f"checkpoint-{steps}").exists():
            continue
        print(f"seed {seed}: training {steps} steps, saving every {every} ...", flush=True)
        torch.manual_seed(seed)
        model = tiny_gpt_neox(**MODEL)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        gen = torch.Generator().manual_seed(seed)
        for step in range(steps + 1):
            if step % every == 0:
                model.save_pretrained(out / f"seed{seed}" / f"checkpoint-{step}", max_shard_size="200KB")
            if step == steps:
                break
            ids = batch(gen)
            loss = model(input_ids=ids, labels=ids).loss
            opt.zero_grad()
            loss.backward()
            opt.step()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("study")
    p.add_argument("--seeds", type=int, default=6)
    p.add_argument("--steps", type=int, default=250)
    p.add_argument("--every", type=int, default=10)
    args = p.parse_args()
    torch.set_num_threads(1)
    ckpts = Path(args.study).with_name(Path(args.study).name + "-checkpoints")
    make_checkpoints(ckpts, args.seeds, args.steps, args.every)
    probe = Path(args.study).with_name(Path(args.study).name + "-probe.pt")  # not among the checkpoints
    torch.save(batch(torch.Generator().manual_seed(1234), n=8), probe)
    vt = Path(sys.executable).with_name("vt")
    subprocess.run([str(vt) if vt.exists() else "vt", "import", str(ckpts), args.study,
                    "--pattern", "seed{seed}/checkpoint-{step}/model*.safetensors",
                    "--factory", "examples.neox:tiny_gpt_neox", "--kwargs", json.dumps(MODEL),
                    "--rename", json.dumps({"embed_out.": "lm_head."}),  # transformers saves the head as embed_out
                    "--hook", "gpt_neox.layers.*.mlp", "--probe", str(probe), "--hmm", json.dumps(HMM)], check=True)


if __name__ == "__main__":
    main()
