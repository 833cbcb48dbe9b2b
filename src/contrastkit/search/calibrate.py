"""The near-duplicate threshold of an index, calibrated on its own images.

The scale of similarity changes with every encoder and every amount of training, so no fixed number
works. Instead:

1. a seeded sample of the index's images (1,000 by default) gets one copy per edit of :mod:`.edits`
   (JPEG, rescale, crop, shift, brightness/contrast, rotation);
2. the copies are embedded with the index's encoder, as the index's near-duplicate vectors were;
3. the positives are the scores (:mod:`.dup_space`) of each copy with its original; the matches are
   the scores of each image of the index (up to 20,000 of them, sampled) with its 10 best matches
   among the *other* images (images with the same pixels, :mod:`.pixels`, are not "other");
4. the threshold is the lowest score whose estimated precision reaches the target.

**The estimate.** At a threshold T let P(T) be the fraction of copies scoring at least T (the estimated
recall) and M(T) the mean number of images each image of the index scores at least T with (the links a
threshold makes, per image; up to its 10 best matches are counted). These images are the collection's
own, so some have a genuine near-duplicate in it, which is a true link. If a fraction c of images has
one, and genuine near-duplicates score like the edited copies, c P(T) of the links per image are true,
F(T) = M(T) - c P(T) are false, and

    precision(T) = 1 - F(T) / M(T).

c is estimated from the index: M(T) / P(T) = c + F(T) / P(T) exceeds c by the false links, which are
rare where the threshold keeps only the better half of the copies. So c is the mean of M(T) / P(T) at
the thresholds that keep a quarter, ..., a half of the copies (11 of them). Where even there
images are linked falsely (an encoder that cannot tell copies from neighbours), c and the estimated
precision come out too high; the benchmark (benchmarks/near_duplicates_bench.py) measures how close
the estimate comes. F can only grow as T falls, so it is made non-increasing in T (least squares, pool
adjacent violators; then clipped at 0), which irons out the noise where few links are left. The
threshold is the lowest T whose estimated precision reaches the target. The copies of a sample of images
and the images' matches leave the estimate uncertain by a few percent (a standard error of about 0.02
with 1,000 originals on CIFAR-10); its lower end, one standard error down (the 16th percentile over 200
bootstrap resamples of the sampled originals and of the images' matches), is reported beside it. A
collection without near-duplicates has c = 0: no threshold reaches the target, and the threshold is
put just above every image's best match. Links are counted between pairs of images; the groups
reported join images through chains of links, which can add pairs that no single link made.

Genuine near-duplicates may score otherwise than the edits made here (closer, for a re-saved file;
farther, for a heavier edit); the estimate holds for near-duplicates like these edits.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from ..data.sources import open_rgb
from .dup_space import DuplicateSpace
from .edits import EDIT_KINDS, apply_edit
from .encoder import FrozenEncoder
from .index import ImageIndex
from .pixels import exact_duplicate_groups
from .query import embed_pil

__all__ = ["Calibration", "CalibrationSample", "calibrate_index", "choose_threshold", "sample_scores",
           "check_target_precision", "SAMPLE_SIZE"]

#: Originals sampled for calibration (each gets one copy per edit). The estimated precision's bootstrap
#: standard error on CIFAR-10 was 0.04 with 300 originals and about 0.02 with 1,000 (benchmarks/README.md).
SAMPLE_SIZE = 1000
#: The matches are taken over this many of the index's images (all of them when it holds fewer): they
#: cost no decoding or embedding, and M(T) is only as steady as their number.
MATCH_ROWS = 20_000
#: Best matches kept per image (links beyond them are not counted).
MATCHES_PER_IMAGE = 10
#: c is estimated over the thresholds that keep between these fractions of the copies.
_C_BAND = (0.25, 0.5)
#: The one-sided confidence of the precision's lower bound reported (bootstrap).
_CONFIDENCE = 0.84
_BOOTSTRAP = 200
_GRID = 2000  # thresholds tried (quantiles of the copy scores)


def check_target_precision(value: Any) -> float:
    """``value`` as a target precision.

    Raises:
        ValueError: not a number strictly between 0 and 1.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
        raise ValueError(f"the target precision must be a number strictly between 0 and 1 (e.g. 0.95), "
                         f"got {value!r}")
    return float(value)


@dataclass
class CalibrationSample:
    """The scores calibration works from.

    Attributes:
        positives: per edit kind, each sampled original's score with its edited copy (n,).
        matches: the 10 best scores of each of m images of the index with other images of it (m, 10).
        rows: the sampled originals' rows of the index (n,).
    """

    positives: dict[str, np.ndarray]
    matches: np.ndarray
    rows: np.ndarray


@dataclass
class Calibration:
    """A calibrated near-duplicate threshold and what it was measured to do (stored in ``index.json``).

    Attributes:
        threshold: the score (:mod:`.dup_space`) at or above which two images are near-duplicates.
        target_precision: what the threshold was chosen for.
        estimated_precision, estimated_recall: at the threshold, on the calibration sample.
        precision_low: the lower end of the estimated precision's 84% one-sided interval (bootstrap over the
            sampled originals and the images' matches).
        recall_per_edit: the fraction of copies at or above the threshold, per edit kind.
        links_per_image: M, the images each image is linked to at the threshold, on average.
        duplicate_fraction: c, the estimated fraction of the collection's images that have a near-duplicate.
        reached: whether any threshold reached the target precision (if not: the one just above every
            image's best match).
        sample: originals asked for; sampled: those used (readable).
        seed: of the sample and the edits.
        count: the index's size when calibrated; fingerprint: its model.
        seconds: time the calibration took.
    """

    threshold: float
    target_precision: float
    estimated_precision: float
    precision_low: float
    estimated_recall: float
    recall_per_edit: dict[str, float]
    links_per_image: float
    duplicate_fraction: float
    reached: bool
    sample: int = 0
    sampled: int = 0
    seed: int = 0
    count: int = 0
    fingerprint: str = ""
    seconds: float = 0.0
    edits: list[str] = field(default_factory=lambda: list(EDIT_KINDS))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Calibration":
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})

    def summary(self) -> str:
        """One line for people: the threshold and its figures."""
        per_edit = ", ".join(f"{k} {v:.2f}" for k, v in self.recall_per_edit.items())
        line = (f"near-duplicate threshold {self.threshold:.4f} (score), calibrated on {self.sampled} of the "
                f"index's images and their edited copies: estimated precision {self.estimated_precision:.3f} "
                f"(at least {self.precision_low:.3f} with 84% confidence; target {self.target_precision}), recall "
                f"{self.estimated_recall:.3f} ({per_edit}); "
                f"{self.duplicate_fraction:.1%} of the images seem to have a near-duplicate")
        if not self.reached:
            line += ("; the target precision is out of reach here, so the threshold is just above every "
                     "image's best match")
        return line


def _non_increasing(values: np.ndarray) -> np.ndarray:
    """The closest non-increasing sequence in least squares (pool adjacent violators)."""
    blocks: list[list[float]] = []  # [mean, length]
    for v in values.tolist():
        blocks.append([v, 1])
        while len(blocks) > 1 and blocks[-2][0] < blocks[-1][0]:
            m2, n2 = blocks.pop()
            m1, n1 = blocks.pop()
            blocks.append([(m1 * n1 + m2 * n2) / (n1 + n2), n1 + n2])
    return np.concatenate([np.full(int(n), m) for m, n in blocks]) if blocks else values


def _curves(pos: np.ndarray, matches: np.ndarray, grid: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """P(T), M(T), the precision 1 - F(T) / M(T) and c, for copy scores ``pos`` (n, kinds) and ``matches`` (m, K).

    F(T) = M(T) - c P(T), the false links per image, is made non-increasing in T (it can only grow as the
    threshold falls) by least squares before it is clipped at 0, so that the noise where few links are left
    averages out instead of adding up.
    """
    p = np.sort(pos.ravel())
    flat = np.sort(matches[np.isfinite(matches)])

    def links_at(t: np.ndarray) -> np.ndarray:  # M(T)
        return (len(flat) - np.searchsorted(flat, t, side="left")) / matches.shape[0]

    recall = 1.0 - np.searchsorted(p, grid, side="left") / len(p)  # P(T)
    links = links_at(grid)
    kept = np.linspace(_C_BAND[0], _C_BAND[1], 11)  # fractions of the copies kept
    c = float(np.clip(np.mean(links_at(np.quantile(p, 1.0 - kept)) / kept), 0.0, 1.0))
    false = np.maximum(_non_increasing(links - c * recall), 0.0)  # F(T)
    precision = np.where(links > 0, np.clip(1.0 - false / np.maximum(links, 1e-300), 0.0, 1.0), 1.0)
    return recall, links, precision, c


def choose_threshold(positives: dict[str, np.ndarray], matches: np.ndarray, target_precision: float,
                     seed: int = 0) -> Calibration:
    """The lowest threshold at which the estimated precision 1 - F(T) / M(T) reaches ``target_precision``, with
    the lower end of its 84% one-sided interval (module docstring).

    Args:
        positives: per edit kind, copy-to-original scores, one per sampled original (n,) each.
        matches: each image's best scores with other images, (m,) or (m, K) (-inf pads a row).
        target_precision: in (0, 1).
        seed: of the bootstrap.

    Returns:
        A :class:`Calibration` (without the sample's bookkeeping fields filled in).

    Raises:
        ValueError: a bad target, no positives or no matches, positives of unequal lengths.
    """
    target = check_target_precision(target_precision)
    lengths = {len(np.asarray(v).ravel()) for v in positives.values()}
    if len(lengths) > 1:
        raise ValueError(f"positives must hold one score per sampled original for every edit, got lengths "
                         f"{sorted(lengths)}")
    pos = np.stack([np.asarray(v, np.float64).ravel() for v in positives.values()], 1) if positives else \
        np.zeros((0, 0))  # (n, kinds)
    m = np.asarray(matches, np.float64)
    m = m[:, None] if m.ndim == 1 else m  # (m, K)
    if pos.size == 0 or m.shape[0] == 0:
        raise ValueError(f"calibration needs copies and other images to compare, got {pos.size} copy scores "
                         f"and {m.shape[0]} images' matches")
    best = m.max(axis=1)
    top = float(np.nextafter(best[np.isfinite(best)].max(), np.inf)) if np.isfinite(best).any() else 1.0
    grid = np.unique(np.concatenate([pos.ravel(), [top]]))
    if len(grid) > _GRID:
        grid = np.unique(np.concatenate([np.quantile(grid, np.linspace(0, 1, _GRID)), [top]]))
    recall, links, precision, c = _curves(pos, m, grid)
    rng = np.random.default_rng(seed)
    boot = np.stack([_curves(pos[rng.integers(0, len(pos), len(pos))], m[rng.integers(0, len(m), len(m))],
                             grid)[2] for _ in range(_BOOTSTRAP)])  # (B, grid)
    low = np.quantile(boot, 1.0 - _CONFIDENCE, axis=0)
    ok = np.flatnonzero((precision >= target) & (recall > 0) & (links > 0))
    reached = len(ok) > 0
    i = int(ok[0]) if reached else int(np.searchsorted(grid, top))
    t = float(grid[i])
    per_edit = {k: round(float(np.mean(np.asarray(v) >= t)), 4) for k, v in positives.items()}
    return Calibration(threshold=t, target_precision=target, estimated_precision=round(float(precision[i]), 4),
                       precision_low=round(float(low[i]), 4), estimated_recall=round(float(recall[i]), 4),
                       recall_per_edit=per_edit, links_per_image=round(float(links[i]), 4),
                       duplicate_fraction=round(c, 4), reached=reached)


def _exact_groups(hashes: np.ndarray | None) -> dict[int, list[int]]:
    """Each row that has exact copies -> its group of rows with the same content hash."""
    return {r: g for g in (exact_duplicate_groups(np.asarray(hashes)) if hashes is not None else []) for r in g}


@torch.no_grad()
def _best_others(space: DuplicateSpace, z: torch.Tensor, rows: np.ndarray, same: dict[int, list[int]]
                 ) -> np.ndarray:
    """Each row's best scores with rows that are neither itself nor exact copies of it (``same``; -inf pads).

    Shape:
        z (N, D) the index in the space, rows (n,) -> (n, MATCHES_PER_IMAGE).
    """
    at = torch.from_numpy(rows)
    scores = space.scores(z[at] @ z.T, at, torch.arange(z.shape[0]))  # (n, N)
    for i, r in enumerate(rows.tolist()):
        scores[i, torch.tensor(same.get(r, [r]))] = -float("inf")
    best = torch.full((len(rows), MATCHES_PER_IMAGE), -float("inf"))
    top = scores.topk(min(MATCHES_PER_IMAGE, scores.shape[1]), dim=1).values  # (n, <=K)
    best[:, :top.shape[1]] = top
    return best.numpy()


@torch.no_grad()
def _copy_scores(space: DuplicateSpace, z: torch.Tensor, rows: np.ndarray, copies: torch.Tensor) -> np.ndarray:
    """Score of each sampled row with its copy, which is not in the index: r(original | not copy) is the
    original's own r, r(copy | not original) is taken over the index without the original.

    Shape:
        z (N, D), rows (n,), copies (n, D) in the space -> (n,).
    """
    at = torch.from_numpy(rows)
    together = (copies * z[at]).sum(1)  # (n,) cosine of copy and original
    r_copy = torch.from_numpy(space.neighbour_similarity(copies, index=z, exclude=at))[:, 0]  # (n,)
    r_original = torch.from_numpy(space.reference[rows, 0])  # (n,)
    return (together - (r_copy + r_original) / 2).numpy()


def sample_scores(index: ImageIndex, encoder: FrozenEncoder, space: DuplicateSpace, vectors: np.ndarray,
                  sample: int = SAMPLE_SIZE, seed: int = 0, device: str | torch.device = "cpu",
                  hashes: np.ndarray | None = None) -> CalibrationSample:
    """Copy-to-original scores over a seeded sample of the index's images, and the images' best matches.

    Args:
        vectors: the index's near-duplicate vectors (N, D).

    Raises:
        ValueError: an index of fewer than two images, or no sampled image that can be read.
    """
    n = len(index)
    if n < 2:
        raise ValueError(f"calibrating a near-duplicate threshold needs an index of at least 2 images, got {n}")
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, min(sample, n), replace=False))
    kept, copies = [], {kind: [] for kind in EDIT_KINDS}
    for r in rows.tolist():
        try:
            img = open_rgb(index.paths[r])
        except ValueError:
            continue
        kept.append(r)
        for kind in EDIT_KINDS:
            copies[kind].append(apply_edit(img, kind, rng))
    if not kept:
        raise ValueError(f"none of the {len(rows)} sampled images of index {index.root} can be read any more "
                         f"(first: {index.paths[int(rows[0])]})")
    rows = np.asarray(kept)
    z = space.transform(vectors)  # (N, D)
    positives = {kind: _copy_scores(space, z, rows, space.transform(embed_pil(encoder, images, device,
                                                                             dup_views=True)))
                 for kind, images in copies.items()}
    others = np.arange(n) if n <= MATCH_ROWS else np.sort(rng.choice(n, MATCH_ROWS, replace=False))
    same = _exact_groups(hashes)
    matches = np.concatenate([_best_others(space, z, others[lo:lo + 1024], same)
                              for lo in range(0, len(others), 1024)])
    return CalibrationSample(positives, matches, rows)


def calibrate_index(index: ImageIndex, encoder: FrozenEncoder, space: DuplicateSpace, vectors: np.ndarray,
                    target_precision: float = 0.95, sample: int = SAMPLE_SIZE, seed: int = 0,
                    device: str | torch.device = "cpu", hashes: np.ndarray | None = None) -> Calibration:
    """Calibrate the near-duplicate threshold of ``index`` on its own images (see the module docstring).

    Args:
        index: a loaded index.
        encoder: the index's model (checked against its fingerprint).
        space: the index's near-duplicate space; vectors: its near-duplicate vectors (N, D).
        target_precision: in (0, 1).
        sample: originals to sample; seed: of the sample and of the edits.
        device: where the encoder runs.
        hashes: the index's content hashes (exact copies are not counted as "other images").

    Raises:
        ValueError: a bad target or sample size, an index too small, unreadable images;
            :class:`contrastkit.search.IndexMismatchError` for another model than the index's.
    """
    check_target_precision(target_precision)
    if isinstance(sample, bool) or not isinstance(sample, int) or sample < 1:
        raise ValueError(f"the calibration sample must be a positive number of images, got {sample!r}")
    index.check_encoder(encoder)
    t0 = time.perf_counter()
    data = sample_scores(index, encoder, space, vectors, sample, seed, device, hashes)
    cal = choose_threshold(data.positives, data.matches, target_precision, seed=seed)
    cal.sample, cal.sampled, cal.seed = sample, len(data.rows), seed
    cal.count, cal.fingerprint = len(index), index.fingerprint
    cal.seconds = round(time.perf_counter() - t0, 2)
    return cal
