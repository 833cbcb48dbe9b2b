"""BatchAugment: SimCLR views of a whole batch at once, on the batch's device.

The per-image pipeline (:class:`~contrastkit.augment.SimCLRTransform`) pays
Python and dispatch overhead for every op of every image. ``BatchAugment``
draws the same random parameters per sample but applies each op to the whole
batch in a few tensor passes: crop + flip + rotation in one ``grid_sample``,
colour jitter as four fused blend passes plus one hue rotation, grouped-conv
blur. Parameters are drawn on the CPU (from ``generator`` if given), so the
same seed gives the same views on any device.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from . import functional as AF
from ._transfer import chunk_rows, pack_to_device
from .config import (
    BLUR_SIGMA,
    CROP_RATIO,
    CUTOUT_FRACTION,
    SOLARIZE_THRESHOLD,
    AugmentConfig,
    _config_from_args,
    preset_config,
)

__all__ = ["BatchAugment", "sample_jitter_params"]

# Jitter op ids, in the order of torchvision's ColorJitter (fn_idx 0..3).
_BRIGHTNESS, _CONTRAST, _SATURATION, _HUE = 0, 1, 2, 3


def sample_jitter_params(
    n: int,
    jitter: tuple[float, float, float, float],
    p: float,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draws torchvision ``RandomApply([ColorJitter(b, c, s, h)], p)`` parameters for n samples.

    Args:
        n: number of samples.
        jitter: ``(brightness, contrast, saturation, hue)`` amounts; factors are
            uniform in ``[max(0, 1 - a), 1 + a]`` (hue: ``[-a, a]``).
        p: probability that a sample is jittered at all.
        generator: CPU random generator.

    Returns:
        ``(applied, order, factors)``: bool ``(n,)``; ``order`` int64 ``(n, 4)``,
        a uniformly random permutation of the op ids (0 brightness, 1 contrast,
        2 saturation, 3 hue) per sample; ``factors`` float32 ``(n, 4)`` indexed by
        op id. Samples not applied get the identity factors (1, 1, 1, 0).
    """
    applied = torch.rand(n, generator=generator) < p  # (n,)
    order = torch.rand(n, 4, generator=generator).argsort(dim=1)  # (n, 4): uniform permutations
    lo = torch.tensor([max(0.0, 1.0 - a) for a in jitter[:3]] + [-jitter[3]])  # (4,)
    hi = torch.tensor([1.0 + a for a in jitter[:3]] + [jitter[3]])  # (4,)
    factors = lo + (hi - lo) * torch.rand(n, 4, generator=generator)  # (n, 4)
    identity = torch.tensor([1.0, 1.0, 1.0, 0.0])
    factors = torch.where(applied.unsqueeze(1), factors, identity)  # (n, 4)
    return applied, order, factors


def _cpu_generator(generator: torch.Generator | None) -> torch.Generator | None:
    """The CPU generator parameters are drawn from (see :meth:`BatchAugment.forward`)."""
    if generator is None:
        return None
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    if generator.device.type == "cpu":
        return generator
    seed = int(torch.randint(0, 2**63 - 1, (1,), generator=generator, device=generator.device).item())
    return torch.Generator().manual_seed(seed)


class BatchAugment(nn.Module):
    """Batched SimCLR augmentation: V independent random views of every image in a batch.

    Same arguments, defaults and presets as :class:`~contrastkit.augment.SimCLRTransform`
    (see :class:`~contrastkit.augment.AugmentConfig`), and the same op order:
    crop (or resize) -> flip -> rotate -> colour jitter (random op order per
    sample) -> grayscale -> blur -> solarize -> cutout -> normalize. Every sample
    of every view draws its own parameters.

    Differences from the per-image pipeline, all small: ops run in float32
    (torchvision on uint8/PIL rounds after each op); a crop shrunk by more than
    ~1.5x is resampled without antialiasing; bilinear taps at a crop's edge may
    read the pixel just outside the box instead of repeating the edge pixel.

    Reproducibility: pass a ``torch.Generator`` to :meth:`forward`, or seed the
    global RNG with ``torch.manual_seed``; parameters are always drawn on the CPU,
    so a CPU generator seed gives the same views on CPU and GPU (up to float rounding).

    Args:
        size: output side S.
        crop, crop_scale, flip, color, color_strength, color_p, grayscale,
            grayscale_p, blur, blur_p, rotate, cutout, solarize, normalize: as in
            :class:`~contrastkit.augment.AugmentConfig`.
        n_views: number of views V >= 1 (2 for SimCLR).
        config: a ready :class:`AugmentConfig` instead of the keyword arguments.

    Raises:
        TypeError, ValueError: invalid arguments (see :class:`AugmentConfig`).

    Shape:
        input (B, C, H, W), C in {1, 3}, uint8 or float in [0, 1], any device;
        output a list of V float32 tensors (B, 3, S, S) on the same device.

    Example:
        >>> aug = BatchAugment.from_preset("cifar", n_views=2)
        >>> x1, x2 = aug(images_uint8)  # each (B, 3, 32, 32), normalised
    """

    def __init__(
        self,
        size: int | None = None,
        crop: bool = True,
        crop_scale: tuple[float, float] = (0.08, 1.0),
        flip: bool = True,
        color: bool = True,
        color_strength: float = 1.0,
        color_p: float = 0.8,
        grayscale: bool = True,
        grayscale_p: float = 0.2,
        blur: bool = True,
        blur_p: float = 0.5,
        rotate: float = 0.0,
        cutout: float = 0.0,
        solarize: float = 0.0,
        normalize: Any = None,
        n_views: int = 2,
        *,
        config: AugmentConfig | None = None,
    ) -> None:
        super().__init__()
        config = _config_from_args("BatchAugment", config, locals())
        if isinstance(n_views, bool) or not isinstance(n_views, int) or n_views < 1:
            raise ValueError(f"n_views must be an int >= 1, got {n_views!r}")
        self.config = config
        self.n_views = n_views
        if config.normalize is not None:
            mean, std = (torch.tensor(v, dtype=torch.float64).view(1, 3, 1, 1) for v in config.normalize)
            # (x - mean) / std as one fused x * scale + bias pass
            self.register_buffer("_norm_scale", (1.0 / std).float(), persistent=False)
            self.register_buffer("_norm_bias", (-mean / std).float(), persistent=False)
        else:
            self._norm_scale = self._norm_bias = None

    @classmethod
    def from_preset(cls, name: str, n_views: int = 2, **overrides: Any) -> "BatchAugment":
        """Builds from a preset of :data:`~contrastkit.augment.PRESETS`, with some arguments overridden.

        Raises:
            ValueError: unknown preset (the message lists the known ones).
        """
        return cls(config=preset_config(name, **overrides), n_views=n_views)

    @property
    def size(self) -> int:
        """Output side S."""
        return self.config.size

    @property
    def normalize(self) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        """``(mean, std)`` applied last, or None."""
        return self.config.normalize

    def extra_repr(self) -> str:
        fields = ", ".join(f"{k}={v}" for k, v in self.config.as_dict().items())
        return f"{fields}, n_views={self.n_views}"

    # ----------------------------------------------------------------- views
    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None,
                size: int | None = None) -> list[torch.Tensor]:
        """Returns ``n_views`` augmented views of the batch.

        Args:
            images: uint8 (0-255) or float (0-1) RGB or grayscale batch.
            generator: ``torch.Generator`` for the random parameters (default: the
                global CPU RNG, seeded by ``torch.manual_seed``). Parameters are drawn
                on the CPU: a CPU generator is used as is; a generator on another
                device (e.g. ``torch.Generator("cuda")``) supplies one 63-bit seed for
                a CPU generator, so it is reproducible too.
            size: output side S of this call's views (None: the configured :attr:`size`). A resolution
                schedule (:mod:`contrastkit.augment.resolution`) asks for small views early in training. A seeded
                call draws the same crop boxes, flips and colour parameters at every size.

        Returns:
            A list of V float32 tensors, normalised if ``normalize`` was given.

        Raises:
            TypeError: not a tensor, unsupported dtype, or ``generator`` is not a torch.Generator.
            ValueError: wrong shape, float values outside [0, 1], or a size that is not an int >= 1.

        Shape:
            images (B, C, H, W) -> V x (B, 3, S, S).
        """
        x = self._check(images)
        if size is None:
            size = self.config.size
        elif isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be an int >= 1 (the side of the views in pixels) or None, got {size!r}")
        gen = _cpu_generator(generator)
        return [self._view(x, gen, size) for _ in range(self.n_views)]

    def _check(self, images: torch.Tensor) -> torch.Tensor:
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"images must be a tensor (B, C, H, W), got {type(images).__name__}")
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"images must have shape (B, C, H, W) with C in {{1, 3}}, got {tuple(images.shape)}")
        if images.shape[2] == 0 or images.shape[3] == 0:
            raise ValueError(f"images are empty: shape {tuple(images.shape)}")
        if images.dtype == torch.uint8:
            return images
        if not images.is_floating_point():
            raise TypeError(f"images must be uint8 or floating point in [0, 1], got dtype {images.dtype}")
        if images.numel() > 0:
            lo, hi = torch.aminmax(images)
            lo, hi = lo.item(), hi.item()
            if not (lo >= 0.0 and hi <= 1.0):  # also catches NaN
                raise ValueError(
                    f"float images must lie in [0, 1], got values in [{lo:.4g}, {hi:.4g}]; pass uint8 images or divide by 255"
                )
        return images

    def _sample(self, B: int, H: int, W: int, S: int, gen: torch.Generator | None) -> dict[str, torch.Tensor]:
        """Draws every random parameter of one view for B samples (on the CPU), then orders the samples.

        Samples are sorted by the position of the hue op in their jitter order
        (0-3; 4 = no jitter), so that each chunk's hue samples at a position form
        one contiguous slice: the hue kernel then runs in place on a slice, with no
        gather or scatter. ``p["src"]`` maps a slot to its image.
        """
        cfg = self.config
        p: dict[str, torch.Tensor] = {}
        flip = torch.rand(B, generator=gen) < 0.5 if cfg.flip else torch.zeros(B, dtype=torch.bool)
        rot = torch.zeros(B, dtype=torch.long)
        if cfg.rotate > 0:
            turn = torch.rand(B, generator=gen) < cfg.rotate
            k = torch.randint(1, 4, (B,), generator=gen)  # 90, 180 or 270 degrees
            rot = torch.where(turn, k, rot)
        p["flip"], p["rot"] = flip, rot
        if cfg.crop:
            top, left, h, w = AF.sample_crop_boxes(B, H, W, cfg.crop_scale, CROP_RATIO, gen)
            p["theta"] = AF.crop_theta(top, left, h, w, H, W, flip, rot)  # (B, 2, 3)
        group = torch.full((B,), 4, dtype=torch.long)  # position of the hue op, 4 = none
        if cfg.color and cfg.color_strength > 0 and cfg.color_p > 0:
            applied, order, factors = sample_jitter_params(B, cfg.jitter, cfg.color_p, gen)
            f = factors.gather(1, order)  # (B, 4): factor of the op at each position
            is_b, is_c, is_s = order == _BRIGHTNESS, order == _CONTRAST, order == _SATURATION  # (B, 4)
            blend = applied.unsqueeze(1) & (is_b | is_c | is_s)  # (B, 4)
            fb = torch.where(blend, f, torch.ones_like(f))  # (B, 4): 1 = identity
            p["jit_f"] = fb
            p["jit_wg"] = is_s.float() * blend  # (B, 4): saturation targets the luma image
            p["jit_wm"] = is_c.float() * blend  # (B, 4): contrast targets the mean luma
            p["hue"] = factors[:, _HUE]  # (B,)
            hue_pos = (order == _HUE).long().argmax(dim=1)  # (B,)
            group = torch.where(applied, hue_pos, group)
        if cfg.grayscale and cfg.grayscale_p > 0:
            p["gray"] = torch.rand(B, generator=gen) < cfg.grayscale_p
        if cfg.blur and cfg.blur_p > 0:
            p["blur"] = torch.rand(B, generator=gen) < cfg.blur_p
            p["sigma"] = torch.empty(B).uniform_(BLUR_SIGMA[0], BLUR_SIGMA[1], generator=gen)
        if cfg.solarize > 0:
            p["solarize"] = torch.rand(B, generator=gen) < cfg.solarize
        if cfg.cutout > 0:
            side = max(1, round(CUTOUT_FRACTION * S))
            apply = torch.rand(B, generator=gen) < cfg.cutout
            lo = torch.randint(0, S, (B, 2), generator=gen) - side // 2  # (B, 2): top row, left column
            hi = torch.where(apply.unsqueeze(1), lo + side, lo)  # empty box where not applied
            p["cut"] = torch.cat([lo, hi], dim=1)  # (B, 4): y0, x0, y1, x1
        order_ = torch.argsort(group, stable=True)  # (B,)
        p = {k: v[order_] for k, v in p.items()}
        p["group"] = group[order_]
        p["src"] = order_
        return p

    def _view(self, images: torch.Tensor, gen: torch.Generator | None, S: int) -> torch.Tensor:
        B, _, H, W = images.shape
        dev = images.device
        p = self._sample(B, H, W, S, gen)
        out = torch.empty(B, 3, S, S, dtype=torch.float32, device=dev)  # (B, 3, S, S)
        for lo, hi in _chunks(p["group"], chunk_rows(dev, S, B)):
            q = {k: v[lo:hi] for k, v in p.items()}
            host = self._chunk_params(q)
            d = pack_to_device(host, dev)  # one copy per chunk; on the CPU, nothing moves
            v = self._render(images.index_select(0, d["src"]), q, host, d, S)  # (n, 3, S, S)
            out.index_copy_(0, d["src"], v)
        return out

    def _chunk_params(self, q: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The CPU tensors one chunk's ops read on the device: the per-sample parameters and, for each op applied
        to some samples only, the chunk positions of those samples."""
        host = {"src": q["src"]}
        if "theta" in q:
            host["theta"] = q["theta"]
        else:
            host["flip_idx"] = torch.nonzero(q["flip"]).squeeze(1)
            for k in (1, 2, 3):
                host[f"rot{k}_idx"] = torch.nonzero(q["rot"] == k).squeeze(1)
        if "jit_f" in q:  # (4, n): one contiguous row per jitter position
            host.update(jit_f=q["jit_f"].t().contiguous(), jit_wg=q["jit_wg"].t().contiguous(),
                        jit_wm=q["jit_wm"].t().contiguous(), hue=q["hue"])
        for name in ("gray", "blur", "solarize"):
            if name in q:
                host[f"{name}_idx"] = torch.nonzero(q[name]).squeeze(1)
        if "blur" in q:
            host["sigma"] = q["sigma"][host["blur_idx"]]
        if "cut" in q:
            host["cut"] = q["cut"]
        return host

    def _render(self, x: torch.Tensor, q: dict[str, torch.Tensor], host: dict[str, torch.Tensor],
                d: dict[str, torch.Tensor], S: int) -> torch.Tensor:
        """All ops of one view on one chunk, at output side ``S``. ``q`` holds the chunk's parameters and ``host``
        what the device reads, both on the CPU (for the decisions taken on the host); ``d`` is ``host`` on the
        device."""
        cfg = self.config
        n = x.shape[0]
        dev = x.device
        x = x.to(torch.float32).mul_(1.0 / 255.0) if x.dtype == torch.uint8 else x.to(torch.float32)  # as v2.ToDtype
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)

        # 1. Geometry: crop + flip + rotation in one grid_sample (or resize, flip, rotate).
        if cfg.crop:
            v = AF.resized_crop(x, d["theta"], S)  # (n, 3, S, S)
        else:
            v = self._resize_flip_rotate(x, host, d, S)  # (n, 3, S, S)

        # 2. Colour jitter, in each sample's random op order.
        if "jit_f" in d:
            self._jitter(v, q["group"], host, d)

        # 3-5. Grayscale, Gaussian blur (per-sample sigma), solarize: each on the samples that draw it.
        ops = (("gray", lambda t: AF.rgb_to_gray(t).expand(-1, 3, -1, -1)),
               ("blur", lambda t: AF.gaussian_blur(t, d["sigma"], cfg.blur_kernel)),
               ("solarize", lambda t: AF.solarize_(t, SOLARIZE_THRESHOLD)))
        for name, op in ops:
            if f"{name}_idx" in d and host[f"{name}_idx"].numel():
                idx = d[f"{name}_idx"]
                v.index_copy_(0, idx, op(v.index_select(0, idx)))

        # 6. Cutout: multiply by a 0/1 keep-mask (boxes are empty where not applied).
        if "cut" in d:
            box = d["cut"]  # (n, 4)
            ar = torch.arange(S, device=dev)
            rows = (ar >= box[:, 0:1]) & (ar < box[:, 2:3])  # (n, S)
            cols = (ar >= box[:, 1:2]) & (ar < box[:, 3:4])  # (n, S)
            hole = rows.view(n, 1, S, 1) & cols.view(n, 1, 1, S)  # (n, 1, S, S)
            v.mul_((~hole).to(v.dtype))

        # 7. Normalise.
        if self._norm_scale is not None:
            torch.addcmul(self._norm_bias.to(dev), v, self._norm_scale.to(dev), out=v)
        return v

    @staticmethod
    def _jitter(v: torch.Tensor, group: torch.Tensor, host: dict[str, torch.Tensor], d: dict[str, torch.Tensor]
                ) -> None:
        """Colour jitter in place. The samples are sorted by the position of their hue op (``group``, 4 = no
        jitter), so the jittered ones are the first rows and those with hue at position k one contiguous slice.
        Per position: one fused brightness / contrast / saturation blend over the jittered rows (factor 1, an
        identity, where a sample's op there is hue), skipped where no sample blends, and one hue pass on its
        slice."""
        counts = torch.bincount(group, minlength=5).tolist()  # CPU
        starts = [sum(counts[:k]) for k in range(6)]
        jittered = starts[4]
        for pos in range(4):
            f, wg, wm = host["jit_f"][pos, :jittered], host["jit_wg"][pos, :jittered], host["jit_wm"][pos, :jittered]
            if bool((f != 1).any()):
                AF.color_blend_(v[:jittered], d["jit_f"][pos, :jittered], d["jit_wg"][pos, :jittered],
                                d["jit_wm"][pos, :jittered], use_gray=bool(wg.any()), use_mean=bool(wm.any()))
            lo, hi = starts[pos], starts[pos + 1]
            if hi > lo:
                AF.adjust_hue_(v[lo:hi], d["hue"][lo:hi])

    def _resize_flip_rotate(self, x: torch.Tensor, host: dict[str, torch.Tensor], d: dict[str, torch.Tensor],
                            S: int) -> torch.Tensor:
        """crop=False: resize the whole image to (S, S) (antialiased, as torchvision's Resize), then flip and rotate
        the samples that draw it (their chunk positions in ``d``, their counts read from ``host``)."""
        if x.shape[-2:] == (S, S):
            v = x.clone()
        else:
            v = torch.nn.functional.interpolate(x, size=(S, S), mode="bilinear", align_corners=False, antialias=True)
        if host["flip_idx"].numel():
            idx = d["flip_idx"]
            v.index_copy_(0, idx, v.index_select(0, idx).flip(-1))
        for k in (1, 2, 3):
            if host[f"rot{k}_idx"].numel():
                idx = d[f"rot{k}_idx"]
                v.index_copy_(0, idx, torch.rot90(v.index_select(0, idx), k, dims=(-2, -1)))
        return v


def _chunks(group: torch.Tensor, rows: int) -> list[tuple[int, int]]:
    """Chunk bounds ``[lo, hi)`` over samples sorted by jitter group: at most ``rows`` samples each; on the CPU
    (``rows`` below the batch) a chunk never straddles two groups, so its hue op sits at one position."""
    B = group.shape[0]
    if rows >= B:
        return [(0, B)] if B else []
    bounds, start = [], 0
    for count in torch.bincount(group, minlength=5).tolist():  # CPU
        bounds += [(lo, min(start + count, lo + rows)) for lo in range(start, start + count, rows)]
        start += count
    return bounds
