"""Shared test setup: one intra-op thread (CI and the dev machines have few cores) and seeds.

``tests/`` is on ``sys.path`` (pytest's default ``prepend`` import mode puts each conftest's folder
there), so test modules import the statistics helpers as ``from stats import ...``.
"""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(params=[0, 1], ids=lambda s: f"seed{s}")
def seed(request: pytest.FixtureRequest) -> int:
    """A fixed seed, parametrized over two values; ``torch.manual_seed`` is already applied."""
    torch.manual_seed(request.param)
    return int(request.param)
