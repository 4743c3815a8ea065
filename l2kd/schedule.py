"""The reference's learning-rate schedule (`scheduler.py` AnnealingLR, decay_style='linear').

It counts examples, not steps: warm-up over int(warmup_ratio x one epoch's examples), then a linear
decay that ends at lr0 x warmup / total rather than 0. Rebuilt for every task, as the optimiser.
Deviation: the reference read the rate before counting the step's examples, so its first update
used lr = 0; we count the step's examples first, so no update is wasted.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LinearWarmupDecay:
    lr0: float
    warmup: int  # examples
    total: int  # examples over all epochs of the task

    @classmethod
    def for_task(cls, lr0: float, examples_per_epoch: int, epochs: int, warmup_ratio: float):
        return cls(lr0, int(warmup_ratio * examples_per_epoch), examples_per_epoch * epochs)

    def __call__(self, seen: int) -> float:
        """The learning rate once `seen` examples (this step's included) have been trained on."""
        if self.warmup and seen <= self.warmup:
            return self.lr0 * seen / self.warmup
        return self.lr0 * max(0.0, self.total - (seen - self.warmup)) / self.total
