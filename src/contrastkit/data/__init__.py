"""Data sets: the offline default (digits), torchvision sets, and folders of images."""
from .sources import DATASETS, DataSplits, ImageFiles, load_dataset, list_datasets
from .subsets import class_balanced_subset, dataset_labels
from .views import ArrayDataset, array_cache_key, EvalDataset, ViewDataset, decode_to_array, seed_for, stage_images, batch_to_device

__all__ = [
    "DATASETS", "DataSplits", "ImageFiles", "load_dataset", "list_datasets",
    "ArrayDataset", "array_cache_key", "EvalDataset", "ViewDataset", "decode_to_array", "seed_for", "stage_images", "batch_to_device",
    "class_balanced_subset", "dataset_labels",
]
