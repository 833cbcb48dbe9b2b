"""SimCLRv2's distillation loss: the student matches the teacher's temperature-softened class distribution."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._validation import check_embeddings, check_flag, check_labels, check_positive_float, check_temperature, \
    compute_dtype

__all__ = ["DistillationLoss"]


class DistillationLoss(nn.Module):
    """Cross-entropy between the teacher's and the student's softened predictions (SimCLRv2 Sec. 2.3).

    Chen et al. 2020 ("Big Self-Supervised Models are Strong Semi-Supervised Learners", arXiv 2006.10029),
    with P(y|x; tau) = softmax(logits / tau)::

        L_distill = - mean_x  sum_y P_T(y|x; tau) log P_S(y|x; tau)

    over every image x of the batch (labelled or not), the teacher fixed (its logits are detached). With
    ``labelled_weight`` A > 0 the loss is the paper's weighted combination (its eq. 3 with A = 1 - alpha)::

        L = (1 - A) L_distill + A * mean_{x labelled} [- log P_S(y|x)]

    where the labelled term is the ordinary cross-entropy (tau = 1) over the samples whose label is >= 0
    (0 when a batch holds none). A = 0 (default) is distillation alone, SimCLRv2's main setting.

    At a very low temperature P_T is one-hot at the teacher's top class, so the loss is the cross-entropy of
    the student's sharpened logits against the teacher's hard labels (self-training with pseudo-labels).

    Args:
        temperature: tau (> 0, finite); the same tau softens teacher and student.
        labelled_weight: A, in [0, 1].
        check_values: check that logits are finite and labels >= -1 (reads flags back from the device: turn
            off inside a training loop that guards the loss itself).

    Raises:
        TypeError, ValueError: a bad argument here, or bad inputs in :meth:`forward`.

    Shape:
        student_logits (N, C), teacher_logits (N, C), labels (N,) or None -> scalar.
    """

    def __init__(self, temperature: float = 1.0, labelled_weight: float = 0.0, check_values: bool = True) -> None:
        super().__init__()
        self.temperature = check_temperature(temperature)
        self.labelled_weight = check_positive_float("labelled_weight", labelled_weight, allow_zero=True)
        if self.labelled_weight > 1:
            raise ValueError(f"labelled_weight must be in [0, 1] (the weight of the labelled loss, 1 - alpha of "
                             f"SimCLRv2 eq. 3), got {self.labelled_weight}")
        self.check_values = check_flag("check_values", check_values)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, labelled_weight={self.labelled_weight}"

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                labels: torch.Tensor | None = None) -> torch.Tensor:
        """The loss of a batch.

        Args:
            student_logits: the student's logits.
            teacher_logits: the teacher's logits on the same images (detached here).
            labels: class indices, -1 for an unlabelled image; needed when ``labelled_weight`` > 0.

        Returns:
            A scalar in the logits' compute dtype (float32 for half precision, else theirs).

        Raises:
            TypeError: non-tensors or non-floating logits, differing dtypes, non-integer labels.
            ValueError: shapes other than (N, C) and (N,), fewer than 2 classes, differing shapes, a label
                outside [-1, C), missing labels with ``labelled_weight`` > 0, non-finite logits.

        Shape:
            student_logits (N, C), teacher_logits (N, C), labels (N,) -> ().
        """
        s = check_embeddings("student_logits", student_logits, "NC", self.check_values)
        t = check_embeddings("teacher_logits", teacher_logits, "NC", self.check_values)
        if s.shape != t.shape:
            raise ValueError(f"student_logits and teacher_logits must have the same shape (N, C), got "
                             f"{tuple(s.shape)} and {tuple(t.shape)}")
        if s.dtype != t.dtype:
            raise TypeError(f"student_logits and teacher_logits must have the same dtype, got {s.dtype} and {t.dtype}")
        n, c = s.shape
        if c < 2:
            raise ValueError(f"the logits must cover C >= 2 classes, got C={c}")
        dtype = compute_dtype(s.dtype)
        s, t = s.to(dtype), t.detach().to(dtype)
        teacher = F.softmax(t / self.temperature, dim=1)  # (N, C)
        student = F.log_softmax(s / self.temperature, dim=1)  # (N, C)
        # 0 * log p is 0 where the teacher gives a class no mass, even if the student's log p underflows to -inf
        terms = torch.where(teacher > 0, teacher * student, torch.zeros((), dtype=dtype, device=s.device))
        distill = -terms.sum(dim=1).mean()  # ()
        if self.labelled_weight == 0:
            return distill
        if labels is None:
            raise ValueError(f"labelled_weight={self.labelled_weight} needs labels (N,) (-1 for unlabelled "
                             f"images); got None")
        y = check_labels(labels, n, s.device, self.check_values)
        if self.check_values and n and int(y.max()) >= c:
            raise ValueError(f"labels must be < C={c} (or -1 for unlabelled images), got maximum {int(y.max())}")
        labelled = y >= 0  # (N,)
        nll = F.cross_entropy(s, y.clamp_min(0), reduction="none")  # (N,), at tau = 1
        count = labelled.sum()
        supervised = torch.where(labelled, nll, torch.zeros((), dtype=dtype, device=s.device)).sum() / \
            count.clamp_min(1)  # (), 0 without labelled samples
        return (1 - self.labelled_weight) * distill + self.labelled_weight * supervised
