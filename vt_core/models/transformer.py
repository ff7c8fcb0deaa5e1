"""The paper's modular-arithmetic transformer (Nanda et al.'s grokking model), n layers.

Parameters follow TransformerLens names (``blocks.0.attn.W_Q`` is (n_heads, d_model, d_head)) and
every intermediate value worth recording is an identity :class:`HookPoint`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from vt_core.models.hooks import HookPoint


class LayerNorm(nn.Module):
    vt_metric_roles = {"w": "exclude", "b": "exclude"}  # normalisation: never weights or biases
    vt_dim_names = {"w": ("d_model",), "b": ("d_model",)}  # how the stores name their dimensions

    def __init__(self, d: int, eps: float = 1e-5):
        super().__init__()
        self.w = nn.Parameter(torch.ones(d))
        self.b = nn.Parameter(torch.zeros(d))
        self.eps = eps

    def forward(self, x):
        x = x - x.mean(-1, keepdim=True)
        x = x / (x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt()
        return x * self.w + self.b


class Attention(nn.Module):
    # the paper's code: W_Q, W_K, W_V split per head; W_O one (d_model, heads * d_head) matrix
    vt_metric_roles = {"W_Q": "heads", "W_K": "heads", "W_V": "heads", "W_O": "merged_heads"}
    vt_dim_names = {"W_Q": ("heads", "d_model", "d_head"), "W_K": ("heads", "d_model", "d_head"),
                    "W_V": ("heads", "d_model", "d_head"), "W_O": ("heads", "d_head", "d_model"),
                    "hook_pattern": ("heads", "query_position", "key_position"), "hook_z": ("heads", "position", "d_head")}

    def __init__(self, d_model: int, n_heads: int, d_head: int, n_ctx: int):
        super().__init__()
        s = 1 / math.sqrt(d_model)
        self.W_Q = nn.Parameter(torch.randn(n_heads, d_model, d_head) * s)
        self.W_K = nn.Parameter(torch.randn(n_heads, d_model, d_head) * s)
        self.W_V = nn.Parameter(torch.randn(n_heads, d_model, d_head) * s)
        self.W_O = nn.Parameter(torch.randn(n_heads, d_head, d_model) * s)
        self.register_buffer("mask", torch.tril(torch.ones(n_ctx, n_ctx, dtype=torch.bool)))
        self.d_head = d_head
        self.hook_pattern = HookPoint()
        self.hook_z = HookPoint()

    def forward(self, x):  # (B, T, d_model)
        T = x.shape[1]
        q = torch.einsum("btd,hde->bhte", x, self.W_Q)  # (B, nh, T, hs)
        k = torch.einsum("btd,hde->bhte", x, self.W_K)
        v = torch.einsum("btd,hde->bhte", x, self.W_V)
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.d_head)  # (B, nh, T, T)
        scores = scores.masked_fill(~self.mask[:T, :T], float("-inf"))
        pattern = self.hook_pattern(scores.softmax(-1))
        z = self.hook_z(pattern @ v)  # (B, nh, T, hs)
        return torch.einsum("bhte,hed->btd", z, self.W_O)


class MLPBlock(nn.Module):
    vt_dim_names = {"W_in": ("d_model", "d_mlp"), "b_in": ("d_mlp",), "W_out": ("d_mlp", "d_model"),
                    "b_out": ("d_model",), "hook_pre": ("position", "d_mlp"), "hook_post": ("position", "d_mlp")}

    def __init__(self, d_model: int, d_mlp: int, activation: str):
        super().__init__()
        self.W_in = nn.Parameter(torch.randn(d_model, d_mlp) / math.sqrt(d_model))
        self.b_in = nn.Parameter(torch.zeros(d_mlp))
        self.W_out = nn.Parameter(torch.randn(d_mlp, d_model) / math.sqrt(d_model))
        self.b_out = nn.Parameter(torch.zeros(d_model))
        self.act = nn.ReLU() if activation == "relu" else nn.GELU()
        self.hook_pre = HookPoint()
        self.hook_post = HookPoint()

    def forward(self, x):
        pre = self.hook_pre(x @ self.W_in + self.b_in)
        return self.hook_post(self.act(pre)) @ self.W_out + self.b_out


class Block(nn.Module):
    vt_dim_names = {f"hook_resid_{w}": ("position", "d_model") for w in ("pre", "mid", "post")}

    def __init__(self, d_model, n_heads, d_head, d_mlp, n_ctx, activation, layer_norm):
        super().__init__()
        self.ln1 = LayerNorm(d_model) if layer_norm else nn.Identity()
        self.attn = Attention(d_model, n_heads, d_head, n_ctx)
        self.ln2 = LayerNorm(d_model) if layer_norm else nn.Identity()
        self.mlp = MLPBlock(d_model, d_mlp, activation)
        self.hook_resid_pre = HookPoint()
        self.hook_resid_mid = HookPoint()
        self.hook_resid_post = HookPoint()

    def forward(self, x):
        x = self.hook_resid_pre(x)
        x = self.hook_resid_mid(x + self.attn(self.ln1(x)))
        return self.hook_resid_post(x + self.mlp(self.ln2(x)))


class Embed(nn.Module):
    vt_metric_roles = {"W_E": "exclude"}
    vt_dim_names = {"W_E": ("vocab", "d_model")}

    def __init__(self, d_vocab: int, d_model: int):
        super().__init__()
        self.W_E = nn.Parameter(torch.randn(d_vocab, d_model) / math.sqrt(d_model))

    def forward(self, tokens):  # (B, T) -> (B, T, d_model)
        return self.W_E[tokens]


class PosEmbed(nn.Module):
    vt_metric_roles = {"W_pos": "exclude"}
    vt_dim_names = {"W_pos": ("position", "d_model")}

    def __init__(self, n_ctx: int, d_model: int):
        super().__init__()
        self.W_pos = nn.Parameter(torch.randn(n_ctx, d_model) / math.sqrt(d_model))

    def forward(self, x):
        return x + self.W_pos[: x.shape[1]]


class Unembed(nn.Module):
    vt_metric_roles = {"W_U": "exclude"}  # the paper's code never reads the unembedding
    vt_dim_names = {"W_U": ("d_model", "vocab_out")}

    def __init__(self, d_model: int, d_vocab_out: int):
        super().__init__()
        self.W_U = nn.Parameter(torch.randn(d_model, d_vocab_out) / math.sqrt(d_vocab_out))

    def forward(self, x):
        return x @ self.W_U


class Transformer(nn.Module):
    """Token sequence (B, n_ctx) -> logits at the last position (B, d_vocab_out)."""

    def __init__(self, d_vocab, d_vocab_out, n_ctx, n_layers=1, d_model=128, n_heads=4, d_head=32,
                 d_mlp=512, activation="relu", layer_norm=False):
        super().__init__()
        self.embed = Embed(d_vocab, d_model)
        self.pos_embed = PosEmbed(n_ctx, d_model)
        self.blocks = nn.ModuleList(
            Block(d_model, n_heads, d_head, d_mlp, n_ctx, activation, layer_norm) for _ in range(n_layers)
        )
        self.ln_final = LayerNorm(d_model) if layer_norm else nn.Identity()
        self.unembed = Unembed(d_model, d_vocab_out)

    def forward(self, tokens):
        x = self.pos_embed(self.embed(tokens))
        for block in self.blocks:
            x = block(x)
        return self.unembed(self.ln_final(x))[:, -1]  # (B, d_vocab_out)
