"""ResNet-18 style for small images (CIFAR stem: one 3x3 conv, no max-pool).

``batch_norm=False`` and ``residual=False`` together give the paper's destabilised variant.
Stages are ``layer1`` .. ``layerN`` as in torchvision; each block's output is a hookpoint
(``layer2.0``), and so is every conv (``layer2.0.conv1``).
"""

from __future__ import annotations

from torch import nn


def _norm(c: int, on: bool) -> nn.Module:
    return nn.BatchNorm2d(c) if on else nn.Identity()


class BasicBlock(nn.Module):
    # the paper's get_metrics_resnet18 reads block.conv1 and block.conv2 but never the downsample
    # (shortcut) projection, and fc.bias is its only bias (its convs have none; ours have them
    # when batch_norm is off): those are left out of the weight metrics
    vt_metric_roles = {"shortcut.0.weight": "exclude", "shortcut.0.bias": "exclude",
                       "conv1.bias": "exclude", "conv2.bias": "exclude"}

    def __init__(self, c_in: int, c_out: int, stride: int, batch_norm: bool, residual: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=not batch_norm)
        self.bn1 = _norm(c_out, batch_norm)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=not batch_norm)
        self.bn2 = _norm(c_out, batch_norm)
        self.relu = nn.ReLU()
        self.residual = residual
        self.shortcut: nn.Module = nn.Identity()
        if residual and (stride != 1 or c_in != c_out):
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=not batch_norm), _norm(c_out, batch_norm))

    def forward(self, x):  # (B, C_in, H, W) -> (B, C_out, H/stride, W/stride)
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        if self.residual:
            out = out + self.shortcut(x)
        return self.relu(out)


class ResNet(nn.Module):
    vt_metric_roles = {"conv1.bias": "exclude"}  # as BasicBlock: fc.bias is the only bias

    def __init__(self, in_channels: int, n_classes: int, width: int = 64, blocks: list[int] | None = None,
                 batch_norm: bool = True, residual: bool = True):
        super().__init__()
        blocks = blocks or [2, 2, 2, 2]
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=not batch_norm)
        self.bn1 = _norm(width, batch_norm)
        self.relu = nn.ReLU()
        c = width
        for i, n in enumerate(blocks):
            c_out = width * 2 ** i
            stage = [BasicBlock(c if j == 0 else c_out, c_out, 1 if (i == 0 or j > 0) else 2, batch_norm, residual)
                     for j in range(n)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*stage))
            c = c_out
        self.n_stages = len(blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, n_classes)

    def forward(self, x):  # (B, C, H, W) -> (B, n_classes)
        x = self.relu(self.bn1(self.conv1(x)))
        for i in range(self.n_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.fc(self.pool(x).flatten(1))
