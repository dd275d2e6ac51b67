"""The judge: a small CNN classifier of Fashion-MNIST, the yardstick for generated images.

Not in the paper. It scores class-conditioned samples (does a 'sneaker' sample look like a
sneaker?) and supplies the features for the Fréchet distance, as Inception does for FID.

    x (B, 1, 28, 28) -> conv 3x3 32 -> BN -> ReLU -> maxpool 2   (B, 32, 14, 14)
                     -> conv 3x3 64 -> BN -> ReLU -> maxpool 2   (B, 64, 7, 7)
                     -> flatten -> fc 3136 -> 128 -> ReLU         features (B, 128)
                     -> dropout 0.3 -> fc 128 -> 10               logits (B, 10)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from pipeline.models.base import Configured, ModelConfig


class JudgeConfig(ModelConfig):
    num_classes: int = Field(ge=2, le=10_000, description="classes of the data (10)")
    feature_dim: int = Field(ge=1, le=65_536, description="units of the feature layer (128)")


class JudgeCNN(Configured, nn.Module):
    kind = "judge_cnn"  # config.json's "model"; pipeline/models/registry.py
    Config = JudgeConfig

    def __init__(self, config: JudgeConfig):
        super().__init__()
        self.config = config
        num_classes, feature_dim = config.num_classes, config.feature_dim
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(64 * 7 * 7, feature_dim),
            nn.ReLU(),
        )
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(feature_dim, num_classes))
        # Channels-last (NHWC) convolutions: the same network, faster on CPU
        # (benchmarks/judge_epoch.py). Checkpoints store contiguous copies either way.
        self.to(memory_format=torch.channels_last)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 784) or (B, 1, 28, 28) in [0, 1]."""
        return self.body(x.reshape(-1, 1, 28, 28).contiguous(memory_format=torch.channels_last))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def batch_losses(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self(x)
        loss = F.cross_entropy(logits, labels, reduction="sum")
        correct = (logits.argmax(1) == labels).sum().to(loss.dtype)
        return {"loss": loss, "accuracy": correct}
