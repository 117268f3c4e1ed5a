"""What splink is asked to do when the matching model is trained."""

from __future__ import annotations

from typing import Any

import pytest
from splink.internals.linker_components.training import LinkerTraining


def record_sampled_pairs(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The number of pairs each u estimation asks splink to sample, in order; splink still samples them."""
    sampled: list[float] = []
    estimate = LinkerTraining.estimate_u_using_random_sampling

    def recorded(self: LinkerTraining, *, max_pairs: float, **options: Any) -> None:
        sampled.append(max_pairs)
        estimate(self, max_pairs=max_pairs, **options)

    monkeypatch.setattr(LinkerTraining, "estimate_u_using_random_sampling", recorded)
    return sampled
