"""The resolution schedule: the side of the training views as a run progresses (progressive resizing).

A step on 16-px views of 32-px images costs about a third of a full-size step on a CPU (0.32x in fp32, 0.37x in
bf16: benchmarks/README.md, "Issue 27: the levers of `cifar-budget-2`"), so a time budget sees more images when it
starts on small views (about twice the steps with ``16:0.5,24:0.8``), as FFCV's and fast.ai's ImageNet recipes do;
on a CIFAR-10 validation split it gained kNN accuracy at equal CPU time (benchmarks/README.md, "Accuracy per
minute"). The encoder (a CIFAR-stem ResNet: convolutions and global pooling) takes any size. The last phase is at
the run's own view size (``--size`` or the preset's), the size evaluation uses; it may be a few steps only
(``16:0.5,24:0.999``), which re-estimate the batch-norm statistics at that size: with random resized crops, views
smaller than the evaluation size to the end scored higher than ending on full-size views. A last part reaching 1
(``16:0.5,24:1``) never trains at the run's size: its views are the last part's to the end.

``--size-schedule "16:0.5,24:0.8"`` reads: 16-px views until half of the schedule's progress, 24 px until 80%,
then the run's size to the end. Progress is that of the learning-rate schedule: the fraction of the training
seconds of ``--time-budget-s`` under ``--schedule time``, of the steps of ``--epochs`` otherwise. Views are made
by :class:`~contrastkit.augment.BatchAugment` at the chosen size (``--augment-on device``).
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ResolutionSchedule", "parse_size_schedule"]


@dataclass(frozen=True)
class ResolutionSchedule:
    """View sides by progress.

    Attributes:
        phases: ``(size, until)`` pairs with ``until`` strictly increasing in (0, 1], 1 only for the last:
            ``size`` px until that fraction of the progress (to the end for 1).
        final_size: the side from the last ``until`` to the end (the run's view size); unused when it is 1.
    """

    phases: tuple[tuple[int, float], ...]
    final_size: int

    def size_at(self, progress: float) -> int:
        """The view side at ``progress`` (a fraction of the schedule, clipped to [0, 1])."""
        for size, until in self.phases:
            if progress < until or until >= 1:
                return size
        return self.final_size

    def __str__(self) -> str:
        return ",".join(f"{size}:{until:g}" for size, until in self.phases)


def parse_size_schedule(text: str, final_size: int) -> ResolutionSchedule | None:
    """``"16:0.5,24:0.8"`` -> a :class:`ResolutionSchedule` ending at ``final_size``; an empty string -> None.

    Raises:
        ValueError: a part that is not ``SIZE:UNTIL`` with SIZE an integer >= 4 and UNTIL a fraction in (0, 1]
            (1 in the last part only), fractions that do not increase, or a bad ``final_size``; the message quotes
            the schedule.
    """
    if isinstance(final_size, bool) or not isinstance(final_size, int) or final_size < 4:
        raise ValueError(f"the final view size must be an int >= 4, got {final_size!r}")
    if not isinstance(text, str):
        raise ValueError(f"--size-schedule must be a string of SIZE:UNTIL pairs, got {type(text).__name__}")
    text = text.strip()
    if not text:
        return None
    phases: list[tuple[int, float]] = []
    for part in text.split(","):
        size_text, sep, until_text = part.strip().partition(":")
        try:
            size, until = int(size_text), float(until_text)
        except ValueError:
            size, until = 0, float("nan")
        if not sep or size < 4 or not 0 < until <= 1:
            raise ValueError(f"--size-schedule {text!r}: each part must be SIZE:UNTIL with SIZE an integer >= 4 "
                             f"(pixels) and UNTIL a fraction in (0, 1] of the run, e.g. 16:0.5,24:0.8; got {part!r}")
        if phases and phases[-1][1] >= 1:
            raise ValueError(f"--size-schedule {text!r}: only the last part may reach 1 (the end of the run), "
                             f"got {part!r} after {phases[-1][0]}:{phases[-1][1]:g}")
        if phases and until <= phases[-1][1]:
            raise ValueError(f"--size-schedule {text!r}: the fractions must increase, got {until:g} after "
                             f"{phases[-1][1]:g}")
        phases.append((size, until))
    return ResolutionSchedule(tuple(phases), final_size)
