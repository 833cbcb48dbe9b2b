"""Batched image kernels with per-sample parameters, on float32 tensors in [0, 1].

Each kernel takes a batch ``x`` of shape ``(B, 3, H, W)`` and one parameter per
sample, and reproduces the torchvision v2 functional of the same name applied
image by image (same formulas, same clamping), so that
:class:`~contrastkit.augment.BatchAugment` draws views from the same
distribution as :class:`~contrastkit.augment.SimCLRTransform`. Kernels whose
name ends in ``_`` work in place.

These are building blocks; most users want :class:`~contrastkit.augment.BatchAugment`.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = [
    "GRAY_WEIGHTS",
    "rgb_to_gray",
    "color_blend_",
    "adjust_brightness_",
    "adjust_contrast_",
    "adjust_saturation_",
    "adjust_hue",
    "adjust_hue_",
    "gaussian_kernels",
    "gaussian_blur",
    "solarize_",
    "sample_crop_boxes",
    "crop_theta",
    "affine_grid",
    "resized_crop",
]

#: Luma weights of ``rgb_to_grayscale`` in torchvision (ITU-R 601-2, as PIL).
GRAY_WEIGHTS: tuple[float, float, float] = (0.2989, 0.587, 0.114)


def _per_sample(factor: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    """Broadcasts a scalar or ``(B,)`` factor to ``(B, 1, 1, 1)`` on x's device and dtype."""
    f = torch.as_tensor(factor, dtype=x.dtype, device=x.device)
    if f.ndim == 0:
        return f.reshape(1, 1, 1, 1)
    if f.shape != (x.shape[0],):
        raise ValueError(f"per-sample factor must be a scalar or have shape ({x.shape[0]},), got {tuple(f.shape)}")
    return f.view(-1, 1, 1, 1)  # (B, 1, 1, 1)


def rgb_to_gray(x: torch.Tensor) -> torch.Tensor:
    """Luma ``0.2989 R + 0.587 G + 0.114 B`` (torchvision's ``rgb_to_grayscale``).

    Args:
        x: RGB batch.

    Returns:
        The grayscale batch.

    Shape:
        x (B, 3, H, W) -> (B, 1, H, W).
    """
    r, g, b = x.unbind(dim=1)  # each (B, H, W)
    return r.mul(GRAY_WEIGHTS[0]).add_(g, alpha=GRAY_WEIGHTS[1]).add_(b, alpha=GRAY_WEIGHTS[2]).unsqueeze(1)


def color_blend_(
    x: torch.Tensor,
    factor: torch.Tensor | float,
    w_gray: torch.Tensor | float = 0.0,
    w_mean: torch.Tensor | float = 0.0,
    use_gray: bool | None = None,
    use_mean: bool | None = None,
) -> torch.Tensor:
    """In place: ``x = clamp(f x + (1 - f) t, 0, 1)`` with target ``t = w_gray * gray + w_mean * mean(gray)``.

    torchvision's brightness, contrast and saturation adjustments are all this
    blend (``_blend`` in ``torchvision.transforms.v2.functional``): brightness has
    t = 0, contrast t = the image's mean luma, saturation t = the luma image. With
    per-sample weights one pass serves a batch whose samples need different ones,
    which is how :class:`~contrastkit.augment.BatchAugment` applies colour jitter
    in a per-sample random order.

    Args:
        x: RGB batch in [0, 1], modified in place.
        factor: blend factor f >= 0, scalar or per sample (1 leaves a sample unchanged).
        w_gray: weight of the luma image in the target (1 for saturation, else 0).
        w_mean: weight of the mean luma in the target (1 for contrast, else 0).
        use_gray, use_mean: whether any ``w_gray`` / ``w_mean`` is non-zero, if the
            caller knows (saves a device sync); None works it out.

    Returns:
        x.

    Shape:
        x (B, 3, H, W); factor, w_gray, w_mean () or (B,).
    """
    f = _per_sample(factor, x)  # (B, 1, 1, 1)
    wg = _per_sample(w_gray, x)
    wm = _per_sample(w_mean, x)
    if use_gray is None:
        use_gray = bool((wg != 0).any())
    if use_mean is None:
        use_mean = bool((wm != 0).any())
    if use_gray or use_mean:
        gray = rgb_to_gray(x)  # (B, 1, H, W)
        if use_mean:
            mean = gray.mean(dim=(2, 3), keepdim=True)  # (B, 1, 1, 1)
            gray.mul_(wg).add_(mean.mul_(wm))
        else:
            gray.mul_(wg)
        gray.mul_(1.0 - f)  # (1 - f) t
        torch.addcmul(gray, x, f, out=x)  # f x + (1 - f) t
    else:
        x.mul_(f)
    return x.clamp_(0.0, 1.0)


def adjust_brightness_(x: torch.Tensor, factor: torch.Tensor | float) -> torch.Tensor:
    """In place: ``clamp(f x, 0, 1)`` per sample (torchvision ``adjust_brightness``).

    Shape:
        x (B, 3, H, W), factor () or (B,); returns x.
    """
    return color_blend_(x, factor)


def adjust_contrast_(x: torch.Tensor, factor: torch.Tensor | float) -> torch.Tensor:
    """In place: blend with the image's mean luma, ``clamp(f x + (1 - f) mean, 0, 1)`` (torchvision ``adjust_contrast``).

    Shape:
        x (B, 3, H, W), factor () or (B,); returns x.
    """
    return color_blend_(x, factor, w_mean=1.0)


def adjust_saturation_(x: torch.Tensor, factor: torch.Tensor | float) -> torch.Tensor:
    """In place: blend with the luma image, ``clamp(f x + (1 - f) gray, 0, 1)`` (torchvision ``adjust_saturation``).

    Shape:
        x (B, 3, H, W), factor () or (B,); returns x.
    """
    return color_blend_(x, factor, w_gray=1.0)


# A float32 difference d in (0, 1] that is not subnormal is >= 2**-126, so
# clamp(d * 2**126, max=1) is exactly 1 for d > 0 and 0 for d == 0: an exact
# "is not the maximum" mask without comparison kernels (which are ~10x slower on CPU).
_MASK_SCALE = 2.0**126


def adjust_hue_(x: torch.Tensor, factor: torch.Tensor | float) -> torch.Tensor:
    """In place: rotates the HSV hue of each sample by ``factor`` turns (torchvision ``adjust_hue`` semantics).

    Saturation and value are kept, hue becomes ``(h + factor) mod 1``. With
    ``V = max(R, G, B)``, ``m = min(R, G, B)``, chroma ``C = V - m`` and the hue
    in sixths ``H`` (``(G - B) / C`` where R is the maximum, ``2 + (B - R) / C``
    where G is, ``4 + (R - G) / C`` where B is), the shifted hue
    ``H' = (H + 6 factor) mod 6`` gives back
    ``R = m + C clamp(|H' - 3| - 1, 0, 1)``, ``G = m + C clamp(2 - |H' - 2|, 0, 1)``,
    ``B = m + C clamp(2 - |H' - 4|, 0, 1)``: the same piecewise-linear map as
    torchvision's HSV round trip, computed with about 40 elementwise passes and
    no comparison or gather kernels. Ties between channels pick R over G over B,
    as torchvision does (the formulas agree at ties anyway).

    Args:
        x: RGB batch in [0, 1], overwritten with the result.
        factor: hue shift in turns, in [-0.5, 0.5], scalar or per sample.

    Returns:
        x.

    Shape:
        x (B, 3, H, W), factor () or (B,).
    """
    shift = _per_sample(factor, x).view(-1, 1, 1)  # (B, 1, 1)
    r, g, b = x.unbind(dim=1)  # each (B, H, W), views into x
    maxc = torch.maximum(r, g)
    torch.maximum(maxc, b, out=maxc)  # (B, H, W)
    minc = torch.minimum(r, g)
    torch.minimum(minc, b, out=minc)  # (B, H, W)
    chroma = maxc - minc  # (B, H, W)
    not_r = torch.sub(maxc, r).mul_(_MASK_SCALE).clamp_(max=1.0)  # 0 where R is the max, else 1
    not_g = torch.sub(maxc, g).mul_(_MASK_SCALE).clamp_(max=1.0)  # 0 where G is the max, else 1
    # H * C = F_r + not_r * ((F_g - F_r) + not_g * (F_b - F_g)), with F_r = G - B,
    # F_g = B - R + 2C, F_b = R - G + 4C; with s = R + G + B:
    # F_g - F_r = 3B - s + 2C and F_b - F_g = 3R - s + 2C.
    s = torch.add(r, g).add_(b)
    hc = torch.mul(r, 3.0).sub_(s).add_(chroma, alpha=2.0).mul_(not_g)
    hc.add_(b, alpha=3.0).sub_(s).add_(chroma, alpha=2.0).mul_(not_r).add_(g).sub_(b)
    # hue in sixths plus the shift: H + 6 factor, in [-4, 8) (any value where C = 0, as then R = G = B)
    h = torch.addcdiv(shift * 6.0, hc, torch.clamp_min(chroma, 1e-30))  # (B, H, W)
    h.sub_(torch.div(h, 6.0).floor_().mul_(6.0))  # mod 6 -> [0, 6)
    torch.sub(h, 3.0, out=r).abs_().sub_(1.0)
    torch.sub(h, 2.0, out=g).abs_().neg_().add_(2.0)
    torch.sub(h, 4.0, out=b).abs_().neg_().add_(2.0)
    return x.clamp_(0.0, 1.0).mul_(chroma.unsqueeze(1)).add_(minc.unsqueeze(1))


def adjust_hue(x: torch.Tensor, factor: torch.Tensor | float) -> torch.Tensor:
    """Out-of-place :func:`adjust_hue_`.

    Shape:
        x (B, 3, H, W), factor () or (B,) -> (B, 3, H, W).
    """
    return adjust_hue_(x.clone(), factor)


def gaussian_kernels(sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Normalised 1-D Gaussian kernels ``exp(-d^2 / (2 sigma^2))`` at integer offsets d (as torchvision).

    Args:
        sigma: standard deviations in pixels, one per kernel.
        kernel_size: odd kernel length.

    Returns:
        One kernel per row.

    Shape:
        sigma (n,) -> (n, kernel_size).
    """
    half = (kernel_size - 1) / 2.0
    d = torch.linspace(-half, half, kernel_size, dtype=sigma.dtype, device=sigma.device)  # (K,)
    return torch.softmax(-(d.unsqueeze(0) / sigma.unsqueeze(1)).pow(2) / 2.0, dim=1)  # (n, K)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Separable Gaussian blur with one sigma per sample, reflect padding (torchvision ``gaussian_blur``).

    Two grouped convolutions (one group per sample and channel) blur the whole
    batch at once.

    Args:
        x: batch (not modified).
        sigma: per-sample sigma in pixels, > 0.
        kernel_size: odd kernel side, at most ``2 * min(H, W) - 1`` (reflect padding).

    Returns:
        The blurred batch.

    Shape:
        x (B, C, H, W), sigma (B,) -> (B, C, H, W).
    """
    B, C, H, W = x.shape
    if kernel_size % 2 != 1 or kernel_size < 1:
        raise ValueError(f"kernel_size must be a positive odd int, got {kernel_size}")
    if B == 0:
        return x.clone()
    pad = kernel_size // 2
    kern = gaussian_kernels(sigma.to(device=x.device, dtype=x.dtype), kernel_size)  # (B, K)
    kern = kern.repeat_interleave(C, dim=0)  # (B*C, K)
    y = F.pad(x.reshape(1, B * C, H, W), (pad, pad, pad, pad), mode="reflect")  # (1, B*C, H+2p, W+2p)
    y = F.conv2d(y, kern.view(B * C, 1, kernel_size, 1), groups=B * C)  # (1, B*C, H, W+2p)
    y = F.conv2d(y, kern.view(B * C, 1, 1, kernel_size), groups=B * C)  # (1, B*C, H, W)
    return y.view(B, C, H, W)


def solarize_(x: torch.Tensor, threshold: float) -> torch.Tensor:
    """In place: pixels ``>= threshold`` become ``1 - x`` (torchvision ``solarize`` on [0, 1] images).

    Shape:
        x (B, C, H, W); returns x.
    """
    return torch.where(x >= threshold, 1.0 - x, x, out=x)


def sample_crop_boxes(
    n: int,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator | None = None,
    tries: int = 10,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Samples ``n`` random-resized-crop boxes by torchvision's ``RandomResizedCrop.get_params`` rule, vectorised.

    Each box makes up to ``tries`` attempts: area fraction uniform in ``scale``,
    aspect ratio ``w / h`` log-uniform in ``ratio``, sides rounded to integers; the
    first attempt that fits the image wins and its top-left corner is uniform over
    the valid positions. A sample with no fitting attempt gets the largest
    centred crop whose ratio is clamped into ``ratio``.

    Args:
        n: number of boxes.
        height: image height H.
        width: image width W.
        scale: ``(min, max)`` area fraction.
        ratio: ``(min, max)`` aspect ratio w / h.
        generator: CPU random generator (default: the global one).
        tries: attempts per box (10 in torchvision).

    Returns:
        ``(top, left, h, w)``, int64 tensors on the CPU.

    Shape:
        each (n,).
    """
    area = float(height * width)
    target = torch.empty(n, tries, dtype=torch.float64).uniform_(scale[0], scale[1], generator=generator) * area
    log_r = torch.empty(n, tries, dtype=torch.float64).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator)
    aspect = log_r.exp_()  # (n, tries)
    w = torch.round(torch.sqrt(target * aspect)).long()  # (n, tries)
    h = torch.round(torch.sqrt(target / aspect)).long()  # (n, tries)
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)  # (n, tries)
    first = ok.to(torch.uint8).argmax(dim=1, keepdim=True)  # (n, 1): first fitting try
    w = w.gather(1, first).squeeze(1)  # (n,)
    h = h.gather(1, first).squeeze(1)  # (n,)
    found = ok.any(dim=1)  # (n,)

    # Fallback: centre crop with the ratio clamped into range (torchvision's rule).
    in_ratio = width / height
    if in_ratio < min(ratio):
        fw, fh = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        fw, fh = int(round(height * max(ratio))), height
    else:
        fw, fh = width, height
    w = torch.where(found, w, torch.full_like(w, fw))
    h = torch.where(found, h, torch.full_like(h, fh))

    u = torch.rand(2, n, dtype=torch.float64, generator=generator)  # (2, n)
    top = torch.minimum((u[0] * (height - h + 1)).floor().long(), height - h)
    left = torch.minimum((u[1] * (width - w + 1)).floor().long(), width - w)
    top = torch.where(found, top, (height - h) // 2)
    left = torch.where(found, left, (width - w) // 2)
    return top, left, h, w


def crop_theta(
    top: torch.Tensor,
    left: torch.Tensor,
    h: torch.Tensor,
    w: torch.Tensor,
    height: int,
    width: int,
    flip: torch.Tensor | None = None,
    rot90: torch.Tensor | None = None,
) -> torch.Tensor:
    """Affine matrices for ``affine_grid`` (``align_corners=False``): crop box, then flip, then rotation.

    Output pixel k of the crop samples input column ``left + (k + 0.5) w / S - 0.5``,
    as torchvision's bilinear resize of the cropped box does. ``flip`` mirrors the
    crop horizontally; ``rot90`` = k rotates it by k * 90 degrees counter-clockwise
    (``torch.rot90(img, k, dims=(-2, -1))``); both act on the square output.

    Args:
        top, left, h, w: integer boxes in pixels.
        height, width: input size H, W.
        flip: bool per sample, or None.
        rot90: quarter turns in {0, 1, 2, 3} per sample, or None.

    Returns:
        The float32 matrices mapping output to input normalised coordinates.

    Shape:
        each box tensor (B,) -> (B, 2, 3).
    """
    B = top.shape[0]
    sx = w.double() / width  # (B,)
    sy = h.double() / height  # (B,)
    cx = (2.0 * left.double() + w.double()) / width - 1.0  # (B,)
    cy = (2.0 * top.double() + h.double()) / height - 1.0  # (B,)
    lin = torch.zeros(B, 2, 2, dtype=torch.float64)  # (B, 2, 2): box scale A
    lin[:, 0, 0] = sx
    lin[:, 1, 1] = sy
    if flip is not None:
        lin[:, 0, 0] = torch.where(flip, -sx, sx)
    if rot90 is not None:
        # (u, v) of the rotated output come from R^k (u, v) of the unrotated one, R = [[0, -1], [1, 0]].
        quarter = torch.tensor(
            [[[1.0, 0.0], [0.0, 1.0]], [[0.0, -1.0], [1.0, 0.0]], [[-1.0, 0.0], [0.0, -1.0]], [[0.0, 1.0], [-1.0, 0.0]]],
            dtype=torch.float64,
        )  # (4, 2, 2)
        lin = lin @ quarter[rot90.long()]  # (B, 2, 2)
    theta = torch.cat([lin, torch.stack([cx, cy], dim=1).unsqueeze(2)], dim=2)  # (B, 2, 3)
    return theta.float()


_GRID_BASE: dict[tuple, torch.Tensor] = {}


def _grid_base(size: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Pixel-centre coordinates ``(u, v, 1)`` of a ``size x size`` output (align_corners=False), cached."""
    key = (size, dtype, str(device))
    base = _GRID_BASE.get(key)
    if base is None:
        lin = (torch.arange(size, dtype=torch.float64) * 2.0 + 1.0) / size - 1.0  # (S,)
        base = torch.ones(size, size, 3, dtype=torch.float64)  # (S, S, 3)
        base[..., 0] = lin.view(1, size)
        base[..., 1] = lin.view(size, 1)
        base = base.view(size * size, 3).to(device=device, dtype=dtype, non_blocking=True)  # (S*S, 3)
        if len(_GRID_BASE) > 16:
            _GRID_BASE.clear()
        _GRID_BASE[key] = base
    return base


def affine_grid(theta: torch.Tensor, size: int) -> torch.Tensor:
    """``F.affine_grid(theta, (B, C, size, size), align_corners=False)`` as one batched product (faster on CPU).

    Shape:
        theta (B, 2, 3) -> grid (B, size, size, 2).
    """
    B = theta.shape[0]
    base = _grid_base(size, theta.dtype, theta.device)  # (S*S, 3)
    return torch.einsum("pk,bck->bpc", base, theta).reshape(B, size, size, 2)  # (B, S, S, 2)


def resized_crop(x: torch.Tensor, theta: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear sampling of a ``size x size`` view per sample through the affine maps ``theta``.

    One ``grid_sample`` call serves every sample's crop, flip and rotation.
    Coordinates are clamped to the image (``padding_mode="border"``), which
    matches torchvision's resize at the image edges. No antialiasing: equal to
    torchvision when a crop is enlarged (always the case for 32 px CIFAR views);
    a crop shrunk by more than ~1.5x is a little sharper than torchvision's
    ``antialias=True`` output.

    Shape:
        x (B, C, H, W), theta (B, 2, 3) -> (B, C, size, size).
    """
    grid = affine_grid(theta.to(device=x.device, dtype=x.dtype), size)  # (B, S, S, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)  # (B, C, S, S)
