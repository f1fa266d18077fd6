"""The learning-rate schedule and the step plan it decays over, fitted to ``--max-minutes``.

Without a budget the plan is ``--epochs`` epochs of steps. With one, the plan is fitted to the
time left: once early (after 30 steps, or a fifth of the first epoch), after every epoch (from
measured epochs, validation included), and inside an epoch whenever the recent pace would run
past the deadline (a shared machine slows down). So the cosine decay ends at the budget; the last
epoch may be partial, and it is validated like the others.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from nci.train.ddp import Dist, all_max

log = logging.getLogger("nci.train")


def lr_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Linear warmup, then cosine decay to ``min_ratio`` at ``total`` steps."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


@dataclass
class EpochClock:
    """When an epoch began, and when (after how many of its steps) its pace was last checked."""

    start: float
    check: float
    n_check: int = 0

    @classmethod
    def now(cls) -> EpochClock:
        t = time.time()
        return cls(start=t, check=t)


@dataclass
class Schedule:
    """Where training is (epoch, batch within it, optimizer step) and where the plan ends."""

    steps_per_epoch: int
    step_cap: int  # the steps --epochs allows
    total_steps: int  # the plan: the learning rate reaches its floor here
    planned_epochs: int
    epoch: int = 0
    batch: int = 0  # batches of this epoch done
    step: int = 0  # optimizer steps done
    max_minutes: float | None = None
    deadline: float | None = None
    spare: float = 0.0  # 2% of the budget, held back
    end_reserve: float = 0.0  # kept for the last validation; the measured one is added once known
    # seconds per step of each epoch of this run, its validation included
    epoch_step_seconds: list[float] = field(default_factory=list)

    @classmethod
    def start(cls, epochs: int, steps_per_epoch: int, max_minutes: float | None, started: float) -> Schedule:
        spare = 0.02 * max_minutes * 60 if max_minutes else 0.0
        return cls(
            steps_per_epoch=steps_per_epoch,
            step_cap=epochs * steps_per_epoch,
            total_steps=epochs * steps_per_epoch,
            planned_epochs=epochs,
            max_minutes=max_minutes,
            deadline=started + max_minutes * 60 if max_minutes else None,
            spare=spare,
            end_reserve=spare,
        )

    def resume(self, state: dict[str, Any], epochs: int) -> None:
        """Continue from a checkpoint's position, with the plan it had unless this run sets a new
        epoch count or a time budget (an epoch that a time budget cut short counts as done)."""
        self.epoch, self.batch, self.step = state["epoch"], state["batch"], state["global_step"]
        self.step_cap = self.step - self.batch + (epochs - self.epoch) * self.steps_per_epoch
        if state["config"]["epochs"] == epochs and self.max_minutes is None:
            self.planned_epochs = state["planned_epochs"]
            self.total_steps = state.get("total_steps", self.planned_epochs * self.steps_per_epoch)
        else:
            self.total_steps = self.step_cap

    def fit(self, step_seconds: float, reserve_seconds: float, dist: Dist, device: torch.device) -> None:
        """Fit the plan, and so the learning-rate schedule, to the time budget: as many steps as
        fit before the deadline less ``reserve_seconds``, at ``step_seconds`` each (up to
        --epochs). Every rank plans the fewest steps any rank would."""
        left = max(0.0, self.deadline - time.time() - reserve_seconds)
        fit = min(self.step_cap, self.step + int(left / step_seconds))
        per_epoch = self.steps_per_epoch
        if fit % per_epoch < per_epoch // 10 and fit - fit % per_epoch > self.step:
            fit -= fit % per_epoch  # not a new epoch (and a validation) for a few steps
        fit = -int(all_max(dist, -float(fit), device))
        if fit != self.total_steps:
            self.total_steps = max(self.step, fit)
            epoch_start = self.step - self.batch
            self.planned_epochs = self.epoch + max(1, math.ceil((self.total_steps - epoch_start) / per_epoch))
            log.info(
                "--max-minutes %g: about %.2f s per step, planning %d steps (%.1f epochs)",
                self.max_minutes,
                step_seconds,
                self.total_steps,
                self.total_steps / per_epoch,
            )

    def after_step(
        self, clock: EpochClock, n_steps: int, n_batches: int, dist: Dist, device: torch.device
    ) -> None:
        """Re-plan inside an epoch: the first estimate, then whenever the pace would overrun."""
        if self.deadline is None:
            return
        if not self.epoch_step_seconds and n_steps == min(30, n_batches // 5):
            # an early estimate, so the schedule decays within the budget (10% for validation,
            # and 2% of the budget held back for the last one)
            self.fit(1.1 * (time.time() - clock.start) / n_steps, self.spare, dist, device)
        elif n_steps % 10 == 0 and self.step < self.total_steps:
            # a shared machine can slow down inside a long epoch: shrink the plan before it runs
            # into the deadline, so that the last epoch still ends on the schedule and is
            # validated instead of being cut off unvalidated
            now = time.time()
            # the slower of the epoch's pace and the pace since the last check
            pace = max((now - clock.start) / n_steps, (now - clock.check) / (n_steps - clock.n_check))
            clock.check, clock.n_check = now, n_steps
            late = now + (self.total_steps - self.step) * pace > self.deadline - self.end_reserve
            if all_max(dist, float(late), device):
                self.fit(pace, self.end_reserve, dist, device)

    def after_epoch(
        self, clock: EpochClock, n_steps: int, t_val: float, dist: Dist, device: torch.device
    ) -> None:
        """Move to the next epoch and re-plan from measured epochs (a shared machine's speed
        drifts): the step cost with validation spread over the epoch, and one more validation
        (as long as the one that began at ``t_val``) held back."""
        self.epoch_step_seconds.append((time.time() - clock.start) / max(1, n_steps))
        self.epoch += 1
        self.batch = 0
        if self.deadline is not None and self.step < self.total_steps:
            self.fit(float(np.mean(self.epoch_step_seconds[-2:])), time.time() - t_val, dist, device)

    @property
    def budget_spent(self) -> bool:
        """The plan a time budget set is done before --epochs ran out."""
        return self.deadline is not None and self.total_steps <= self.step < self.step_cap
