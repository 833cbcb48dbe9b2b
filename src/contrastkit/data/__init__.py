"""Data sets: the offline default (digits), torchvision sets, and folders of images (with a CSV of label sets for
multi-label training)."""
from .multilabel import read_label_csv
from .sources import DATASETS, DataSplits, ImageFiles, load_dataset, list_datasets, resolve_data
from .subsets import class_balanced_subset, dataset_labels
from .views import ArrayDataset, array_cache_key, EvalDataset, ViewDataset, decode_to_array, seed_for, stage_images, batch_to_device

__all__ = [
    "DATASETS", "DataSplits", "ImageFiles", "load_dataset", "list_datasets", "resolve_data",
    "ArrayDataset", "array_cache_key", "EvalDataset", "ViewDataset", "decode_to_array", "seed_for", "stage_images", "batch_to_device",
    "class_balanced_subset", "dataset_labels", "read_label_csv",
]
