"""A GPT-NeoX-style model (the Pythia architecture) built locally from a ``transformers`` config: the
model factory of the import example and tests (``--factory examples.neox:tiny_gpt_neox``). Nothing
comes from a hub."""

from __future__ import annotations


def tiny_gpt_neox(hidden_size: int = 64, num_hidden_layers: int = 2, num_attention_heads: int = 4,
                  intermediate_size: int = 256, vocab_size: int = 512, max_position_embeddings: int = 128):
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    config = GPTNeoXConfig(hidden_size=hidden_size, num_hidden_layers=num_hidden_layers,
                           num_attention_heads=num_attention_heads, intermediate_size=intermediate_size,
                           vocab_size=vocab_size, max_position_embeddings=max_position_embeddings)
    return GPTNeoXForCausalLM(config)
