"""Where images come from: ``digits`` (offline), torchvision sets, and image folders.

Every source yields ``(PIL.Image in RGB, int label)``; label ``-1`` means
unlabelled. :func:`load_dataset` returns the train and test splits with the
class names and the native image side (used to pick the augmentation preset).
"""
from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from ..augment.convert import to_rgb as _to_rgb

__all__ = ["DataSplits", "ImageFiles", "DigitsImages", "load_dataset", "list_datasets", "resolve_data", "DATASETS",
           "IMAGE_EXTENSIONS", "open_rgb", "image_limits", "MAX_IMAGE_PIXELS", "MAX_ASPECT_RATIO"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
DATASETS = ("digits", "cifar10", "cifar100", "stl10")
#: the most pixels an image file may hold (its header is read first): a 48 KB PNG can claim 20000 x 20000
MAX_IMAGE_PIXELS = 40_000_000
#: the longest side over the shortest an image may have: a 1 x 1,000,000 sliver would be resized to a huge square
MAX_ASPECT_RATIO = 50.0
#: after the first unreadable file: how many an error names (then "and N more"), and how long it looks for them
NAMED_BAD_FILES = 10
BAD_FILES_SEARCH_S = 30.0


def image_limits() -> tuple[int, float]:
    """(pixels, aspect ratio): the limits of an image file, :data:`MAX_IMAGE_PIXELS` and :data:`MAX_ASPECT_RATIO`
    unless the environment sets ``CONTRASTKIT_MAX_IMAGE_PIXELS`` or ``CONTRASTKIT_MAX_ASPECT_RATIO`` (read at each
    open, so DataLoader workers follow it too).

    Raises:
        ValueError: a variable that is not a positive number.
    """
    limits = []
    for name, default, kind in (("CONTRASTKIT_MAX_IMAGE_PIXELS", MAX_IMAGE_PIXELS, int),
                                ("CONTRASTKIT_MAX_ASPECT_RATIO", MAX_ASPECT_RATIO, float)):
        text = os.environ.get(name)
        try:
            value = default if text is None else kind(float(text))
        except ValueError:
            value = 0
        if not value > 0:
            raise ValueError(f"{name} must be a positive number, got {text!r}")
        limits.append(value)
    return limits[0], limits[1]


def list_datasets() -> list[str]:
    return [*DATASETS, "<path to an image folder>"]


def resolve_data(name: str) -> str:
    """``--data`` as a run stores it: a known data set's name as it is, an existing path as an absolute one (with
    ``~`` expanded), so that the checkpoint's ``eval`` and ``embed`` find it from any working folder. A path that
    does not exist stays as typed, for :func:`load_dataset`'s error to show."""
    path = os.path.expanduser(name)
    return name if name in DATASETS or not os.path.exists(path) else os.path.abspath(path)


@dataclass
class DataSplits:
    """A data set's splits.

    Attributes:
        name: the data set's name (or folder path).
        train: training split; yields (PIL RGB image, label), label -1 when unlabelled.
        test: evaluation split with labels, or None (an unlabelled folder).
        classes: class names (empty when unlabelled).
        image_size: native side in pixels when all images share it; for a folder of mixed sizes the smallest
            side seen; None when unknown.
        train_paths, test_paths: file path of each image where known (for embedding export).
        extra: anything else a source wants to pass on.
        uniform_size: every image is square with side ``image_size`` (known for the built-in data sets; for a
            folder, every probed image), so decoding at that size loses nothing.
    """

    name: str
    train: Dataset
    test: Dataset | None
    classes: list[str]
    image_size: int | None
    train_paths: list[str] | None = None
    test_paths: list[str] | None = None
    extra: dict = field(default_factory=dict)
    uniform_size: bool = False

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def labelled(self) -> bool:
        return self.num_classes > 0


def _check_size(img: Image.Image) -> None:
    """Refuse an image whose header claims more pixels, or a longer side over its shorter, than the limits."""
    max_pixels, max_aspect = image_limits()
    w, h = img.size
    if w * h > max_pixels:
        raise ValueError(f"{w} x {h} pixels ({w * h / 1e6:.0f} Mpx) is over the limit of {max_pixels / 1e6:g} Mpx "
                         f"(a decompression bomb? CONTRASTKIT_MAX_IMAGE_PIXELS raises the limit)")
    if max(w, h) > max_aspect * max(1, min(w, h)):
        raise ValueError(f"{w} x {h} pixels is {max(w, h) / max(1, min(w, h)):g} times longer than wide, over the "
                         f"limit of {max_aspect:g} (CONTRASTKIT_MAX_ASPECT_RATIO raises it)")


def open_rgb(path: str | os.PathLike, size: int | None = None) -> Image.Image:
    """Open an image file and convert it to 8-bit RGB.

    The header is read first: an image over :func:`image_limits` (pixels, aspect ratio) is refused before it is
    decoded. With ``size``, a JPEG is decoded at a reduced scale (``Image.draft``) whose sides are still at least
    ``size``: the side the caller resizes to. PIL's own limit (twice ``Image.MAX_IMAGE_PIXELS``, 179 Mpx) holds
    whatever the configured one.

    Conversion by :func:`contrastkit.augment.to_rgb`: grayscale (L), palette (P),
    RGBA/LA (composited on white), CMYK and 16-bit images (I;16, scaled to 8 bits,
    not clipped) become RGB.

    Raises:
        ValueError: naming the file when it cannot be read as an image, or is over the limits.
    """
    try:
        with warnings.catch_warnings():  # PIL warns of its own, larger limit; ours is checked just below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
        with img:
            _check_size(img)
            if size and img.format == "JPEG":
                img.draft("RGB", (size, size))
            img.load()
            return _to_rgb(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ValueError(f"cannot read image file {os.fspath(path)!r}: {exc}") from exc


class ImageFiles(Dataset):
    """A list of image files with labels (``-1`` for unlabelled).

    Args:
        samples: (path, label) pairs.
        skip_bad_files: when True, an unreadable file is replaced by the next
            readable one and its path is recorded in ``bad_files``; when False
            (default) it raises a ValueError naming the file and ``--skip-bad-files``.

    Attributes:
        bad_files_log: when set, a text file to which each skipped path is also
            appended, one a line. DataLoader workers hold their own copy of
            ``bad_files``, lost when they exit; the log collects all of them.
        decode_size: when set, the smallest side the consumer needs: JPEGs are
            decoded at a reduced scale down to it (:func:`open_rgb`).
        name_all_bad_files: when set (by a consumer for which one unreadable file ends the work, as pretraining
            without ``skip_bad_files``), the error also names the data set's other unreadable files, up to
            :data:`NAMED_BAD_FILES`, then how many more. Off for a consumer that passes over unreadable files one
            by one (``embed``, ``index``), where each would start a search.
    """

    def __init__(self, samples: Sequence[tuple[str, int]], skip_bad_files: bool = False) -> None:
        self.samples = list(samples)
        self.skip_bad_files = skip_bad_files
        self.bad_files: list[str] = []
        self.bad_files_log: str | None = None
        self.decode_size: int | None = None
        self.name_all_bad_files = False

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def targets(self) -> list[int]:
        return [label for _, label in self.samples]

    @property
    def paths(self) -> list[str]:
        return [path for path, _ in self.samples]

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        for attempt in range(len(self.samples)):
            path, label = self.samples[(index + attempt) % len(self.samples)]
            try:
                return open_rgb(path, self.decode_size), label
            except ValueError as exc:
                if not self.skip_bad_files:
                    others = self._others(path) if self.name_all_bad_files else ""
                    raise ValueError(f"{exc}{others} (pretrain, embed and preview-augment take "
                                     f"--skip-bad-files, in Python skip_bad_files=True, to pass over unreadable "
                                     f"files)") from exc
                if path not in self.bad_files:
                    self.bad_files.append(path)
                    if self.bad_files_log:
                        with open(self.bad_files_log, "a") as f:  # one short append: whole lines
                            f.write(path + "\n")
        raise ValueError(f"no readable image among the {len(self.samples)} files of this data set")


    def _others(self, first: str) -> str:
        """After the unreadable file ``first``: the other unreadable files of the data set, found by opening each
        (for at most :data:`BAD_FILES_SEARCH_S` seconds), so that one failed start names all of them ("" when
        there are none)."""
        bad, looked, deadline = [first], 0, time.monotonic() + BAD_FILES_SEARCH_S
        for path in self.paths:
            if time.monotonic() > deadline:
                break
            looked += 1
            if path == first:
                continue
            try:
                open_rgb(path, self.decode_size)
            except ValueError:
                bad.append(path)
        if len(bad) == 1 and looked == len(self.samples):
            return ""
        named = ", ".join(repr(p) for p in bad[:NAMED_BAD_FILES])
        more = f" and {len(bad) - NAMED_BAD_FILES} more" if len(bad) > NAMED_BAD_FILES else ""
        partial = (f" among the first {looked} of its {len(self.samples)} files (looked for "
                   f"{BAD_FILES_SEARCH_S:g} s)" if looked < len(self.samples) else "")
        return f"; {len(bad)} unreadable file{'s' if len(bad) > 1 else ''}{partial}: {named}{more}"


class DigitsImages(Dataset):
    """scikit-learn's bundled handwritten digits (1,797 8x8 images), upsampled to 32x32 RGB.

    Offline by construction (the data ship with scikit-learn). Split 80/20,
    stratified, with a fixed seed.
    """

    SIZE = 32

    def __init__(self, train: bool = True, seed: int = 0) -> None:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        digits = load_digits()
        images = (digits.images * (255.0 / 16.0)).astype(np.uint8)  # (1797, 8, 8)
        idx_train, idx_test = train_test_split(
            np.arange(len(images)), test_size=0.2, random_state=seed, stratify=digits.target
        )
        idx = idx_train if train else idx_test
        self.images = images[idx]
        self.targets = [int(t) for t in digits.target[idx]]
        self.classes = [str(c) for c in range(10)]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        img = Image.fromarray(self.images[index], mode="L").resize((self.SIZE, self.SIZE), Image.BILINEAR)
        return img.convert("RGB"), self.targets[index]


class _TorchvisionRGB(Dataset):
    """Adapts a torchvision data set so that images are RGB PIL images."""

    def __init__(self, base: Dataset, targets: list[int]) -> None:
        self.base = base
        self.targets = targets

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        img, label = self.base[index]
        return _to_rgb(img), int(label)


#: the torchvision class of each built-in data set, and the folder it keeps under --data-root
_TORCHVISION = {"cifar10": ("CIFAR10", "cifar-10-batches-py/ (the python version of CIFAR-10)"),
                "cifar100": ("CIFAR100", "cifar-100-python/ (the python version of CIFAR-100)"),
                "stl10": ("STL10", "stl10_binary/ (the binary version of STL-10)")}


def _torchvision_sets(name: str, root: str, download: bool):
    """The train and test sets of a torchvision data set (STL-10: train+unlabeled for SimCLR-style pretraining,
    train/test for evaluation)."""
    from torchvision import datasets

    cls = getattr(datasets, _TORCHVISION[name][0])
    if name == "stl10":
        return cls(root, split="train+unlabeled", download=download), cls(root, split="test")
    return cls(root, train=True, download=download), cls(root, train=False)


def _torchvision(name: str, root: str) -> DataSplits:
    """A torchvision data set read from ``root`` by torchvision's own class, which checks every file's checksum;
    downloaded there (torchvision's ``download=True``) when its folder is not there yet. A folder that is there
    but fails the checks is never downloaded over: the error says so."""
    from torchvision import datasets

    root = os.path.expanduser(root)
    folder = Path(root) / getattr(datasets, _TORCHVISION[name][0]).base_folder
    try:
        train, test = _torchvision_sets(name, root, download=False)
    except RuntimeError as exc:
        if folder.exists():
            raise RuntimeError(f"{folder} is there but fails torchvision's checks ({exc}): a file is missing or "
                               f"changed. Move it aside (contrastkit does not download over it) and run again "
                               f"to download {name}, or replace it with a complete copy") from exc
        try:
            train, test = _torchvision_sets(name, root, download=True)
        except Exception as exc:  # network errors come in many types
            raise RuntimeError(
                f"{name} is not in {root} and could not be downloaded ({type(exc).__name__}: {exc}). Offline, "
                f"put {_TORCHVISION[name][1]} inside {root} (or pass --data-root), or point --data at a folder "
                f"of images with train/ and test/ class subfolders") from exc
    classes = list(getattr(train, "classes", []))
    train_targets = [int(t) for t in (train.targets if hasattr(train, "targets") else train.labels)]
    test_targets = [int(t) for t in (test.targets if hasattr(test, "targets") else test.labels)]
    size = 96 if name == "stl10" else 32
    return DataSplits(name, _TorchvisionRGB(train, train_targets), _TorchvisionRGB(test, test_targets),
                      classes, size, uniform_size=True)


def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _class_folder(folder: Path, classes: list[str] | None = None) -> tuple[list[tuple[str, int]], list[str]]:
    subdirs = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    classes = classes if classes is not None else subdirs
    samples: list[tuple[str, int]] = []
    for label, name in enumerate(classes):
        d = folder / name
        if not d.is_dir():
            raise ValueError(f"class folder {d} is missing (the training split has class {name!r})")
        files = _list_images(d)
        if not files:
            raise ValueError(f"class folder {d} holds no image files (looked for {', '.join(IMAGE_EXTENSIONS)})")
        samples.extend((str(p), label) for p in files)
    return samples, classes


def _native_size(paths: list[str], probe: int = 32) -> tuple[int | None, bool]:
    """The common side of a folder's images, from the headers of up to ``probe`` files spread over the list.

    Returns ``(side, uniform)``: the side and True when every probed image is square with the same side, else
    the smallest side seen (a folder of mixed sizes is treated as large images when that side is > 64) and False;
    ``(None, False)`` when nothing can be read.
    """
    if not paths:
        return None, False
    step = max(1, len(paths) // probe)
    sizes = set()
    for p in paths[::step][:probe]:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(p) as img:  # reads the header only
                    _check_size(img)  # an image over the limits is a bad file, not the folder's size
                    sizes.add(img.size)
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
            continue  # a bad file is reported when it is loaded
    if not sizes:
        return None, False
    if len(sizes) == 1:
        (w, h), = sizes
        if w == h:
            return w, True
    return min(min(wh) for wh in sizes), False


def _splits(name: str, train: ImageFiles, test: ImageFiles | None, classes: list[str]) -> DataSplits:
    side, uniform = _native_size(train.paths)
    return DataSplits(name, train, test, classes, side, train.paths, test.paths if test is not None else None,
                      uniform_size=uniform)


def _folder(path: Path, seed: int, val_fraction: float, skip_bad_files: bool) -> DataSplits:
    if not path.is_dir():
        raise ValueError(
            f"--data {str(path)!r} is neither a known data set ({', '.join(DATASETS)}) nor an existing folder"
        )
    if (path / "train").is_dir() and (path / "test").is_dir():
        train_samples, classes = _class_folder(path / "train")
        test_samples, _ = _class_folder(path / "test", classes)
        train, test = ImageFiles(train_samples, skip_bad_files), ImageFiles(test_samples, skip_bad_files)
        return _splits(str(path), train, test, classes)
    subdirs = [d for d in path.iterdir() if d.is_dir() and not d.name.startswith(".")]
    loose = [p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    if subdirs and not loose:
        samples, classes = _class_folder(path)
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        # Deterministic stratified split: a seeded permutation within each class.
        rng = np.random.default_rng(seed)
        train_samples, test_samples = [], []
        for label in range(len(classes)):
            cls = [s for s in samples if s[1] == label]
            order = rng.permutation(len(cls))
            n_test = int(round(val_fraction * len(cls)))
            n_test = min(max(n_test, 1 if len(cls) > 1 else 0), len(cls) - 1)
            test_samples += [cls[i] for i in sorted(order[:n_test])]
            train_samples += [cls[i] for i in sorted(order[n_test:])]
        train, test = ImageFiles(train_samples, skip_bad_files), ImageFiles(test_samples, skip_bad_files)
        return _splits(str(path), train, test, classes)
    files = _list_images(path)
    if not files:
        raise ValueError(f"folder {path} holds no image files (looked for {', '.join(IMAGE_EXTENSIONS)}), "
                         f"nor class subfolders, nor train/ and test/")
    train = ImageFiles([(str(p), -1) for p in files], skip_bad_files)
    return _splits(str(path), train, None, [])


def load_dataset(name: str, root: str = "~/.cache/contrastkit/datasets", seed: int = 0,
                 val_fraction: float = 0.2, skip_bad_files: bool = False) -> DataSplits:
    """Load a data set by name or folder path.

    Args:
        name: ``digits``, ``cifar10``, ``cifar100``, ``stl10`` or a folder: with ``train/`` and
            ``test/`` class subfolders; with class subfolders only (split deterministically,
            ``val_fraction`` to test); or images only (unlabelled, SimCLR only).
        root: where torchvision data sets live.
        seed: seed of the deterministic split.
        skip_bad_files: skip unreadable files instead of raising.

    Raises:
        ValueError: an unknown name, an empty folder or class folder.
        RuntimeError: a torchvision set that is not on disk and cannot be downloaded.
    """
    if name == "digits":
        return DataSplits("digits", DigitsImages(True), DigitsImages(False), [str(c) for c in range(10)], 32,
                          uniform_size=True)
    if name in ("cifar10", "cifar100", "stl10"):
        return _torchvision(name, root)
    return _folder(Path(os.path.expanduser(name)), seed, val_fraction, skip_bad_files)
