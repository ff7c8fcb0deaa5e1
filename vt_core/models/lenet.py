"""LeNet-5 (LeCun et al. 1998) for 1- or 3-channel images of at least 10x10 pixels."""

from __future__ import annotations

from torch import nn

from vt_core.config.study_config import ConfigError


class LeNet5(nn.Module):
    def __init__(self, in_channels: int, n_classes: int, size: int, activation: str = "relu"):
        super().__init__()
        if size < 10:
            raise ConfigError(f"model: LeNet5 needs images of at least 10x10 pixels, got {size}x{size}; "
                             f"use model.name = 'resnet' or 'mlp' for this data")
        act = nn.ReLU if activation == "relu" else nn.Tanh
        self.conv1 = nn.Conv2d(in_channels, 6, 5, padding=2)  # (B, 6, S, S)
        self.act1 = act()
        self.pool1 = nn.AvgPool2d(2)
        self.conv2 = nn.Conv2d(6, 16, 5)  # (B, 16, S/2 - 4, S/2 - 4)
        self.act2 = act()
        self.pool2 = nn.AdaptiveAvgPool2d(5)  # (B, 16, 5, 5): 28x28 MNIST as in the paper, other sizes too
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.act3 = act()
        self.fc2 = nn.Linear(120, 84)
        self.act4 = act()
        self.fc3 = nn.Linear(84, n_classes)

    def forward(self, x):
        x = self.pool1(self.act1(self.conv1(x)))
        x = self.pool2(self.act2(self.conv2(x))).flatten(1)
        return self.fc3(self.act4(self.fc2(self.act3(self.fc1(x)))))
