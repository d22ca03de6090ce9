"""The straightforward implementation the engine is measured against (a benchmark baseline only).

This is how a typical implementation of the study trains the Siamese aux net: the default
(NCHW) memory layout, activation before pooling, the shared tower called once per digit, the
default allocator, no per-epoch evaluation. Same sizes, optimizer, loss and batches as
digitcmp's own loop, so the two do the same training work.
"""

from __future__ import annotations

import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Tower(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 32, 3), nn.BatchNorm2d(32)
        self.conv2, self.bn2 = nn.Conv2d(32, 64, 3), nn.BatchNorm2d(64)
        self.fc1, self.bn3 = nn.Linear(256, 200), nn.BatchNorm1d(200)
        self.fc2 = nn.Linear(200, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        x = F.relu(self.bn3(self.fc1(x.view(-1, 256))))
        return self.fc2(x)


class Siamese(nn.Module):
    def __init__(self):
        super().__init__()
        self.tower = Tower()
        self.compare = nn.Linear(20, 2)

    def forward(self, x):
        d1, d2 = self.tower(x[:, 0:1]), self.tower(x[:, 1:2])
        return self.compare(torch.cat((d1, d2), 1)), d1, d2


def train_straightforward(train_x, train_y, train_classes, epochs=25, batch_size=100, lr=0.1, seed=0, device="cpu"):
    """Train the Siamese aux net the plain way; returns (model, seconds of training)."""
    torch.manual_seed(seed)
    model = Siamese().to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    started = time.perf_counter()
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(train_x.shape[0], generator=generator).to(device)
        for start in range(0, train_x.shape[0], batch_size):
            idx = perm[start : start + batch_size]
            cmp, d1, d2 = model(train_x[idx])
            loss = (
                F.cross_entropy(cmp, train_y[idx])
                + F.cross_entropy(d1, train_classes[idx, 0])
                + F.cross_entropy(d2, train_classes[idx, 1])
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    if device != "cpu":
        torch.cuda.synchronize()
    return model, time.perf_counter() - started
