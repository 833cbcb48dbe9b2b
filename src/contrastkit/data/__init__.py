"""Data sets: the offline default (digits), torchvision sets, and folders of images."""
from .sources import DATASETS, DataSplits, ImageFiles, load_dataset, list_datasets
from .views import ArrayDataset, EvalDataset, ViewDataset, decode_to_array, seed_for, stage_images, batch_to_device

__all__ = [
    "DATASETS", "DataSplits", "ImageFiles", "load_dataset", "list_datasets",
    "ArrayDataset", "EvalDataset", "ViewDataset", "decode_to_array", "seed_for", "stage_images", "batch_to_device",
]
