"""Evaluation protocols on learned representations.

One module per protocol, each usable from Python and wired to the command line
(``contrastkit eval --protocol knn|linear|finetune|retrieval|all``,
``contrastkit embed``):

* :mod:`.features`: :func:`extract_features`, run a frozen encoder once.
* :mod:`.knn`: :func:`knn_accuracy`, temperature-weighted cosine kNN (Wu et al. 2018).
* :mod:`.linear`: :func:`linear_eval`, linear classifier on frozen features.
* :func:`class_balanced_subset` (from :mod:`contrastkit.data.subsets`): few-label subsets.
* :mod:`.finetune`: :func:`finetune`, fine-tune encoder + linear layer (SimCLR App. B.5).
* :mod:`.retrieval`: :func:`retrieval_metrics`, Recall@K, MAP@R, R-precision, NMI.
* :mod:`.embed`: :func:`export_embeddings` / :func:`load_embeddings`.
* :mod:`.report`: :func:`format_table`, :func:`write_json`, :func:`read_jsonl`.
* :mod:`.plots`: :func:`plot_embedding_2d`, :func:`plot_curves`.

Accuracies and retrieval metrics are fractions in [0, 1].
"""
from .embed import EMBEDDING_KINDS, export_embeddings, load_embeddings
from .features import extract_features
from .finetune import finetune, random_crop_flip
from .knn import knn_accuracy
from .linear import WEIGHT_DECAY_GRID, linear_eval, standardize_features
from .plots import plot_curves, plot_embedding_2d
from .report import format_table, read_jsonl, to_jsonable, write_json
from .retrieval import retrieval_metrics
from ..data.subsets import class_balanced_subset, dataset_labels  # a data concern, re-exported here

__all__ = [
    "extract_features",
    "knn_accuracy",
    "linear_eval",
    "standardize_features",
    "WEIGHT_DECAY_GRID",
    "class_balanced_subset",
    "dataset_labels",
    "finetune",
    "random_crop_flip",
    "retrieval_metrics",
    "export_embeddings",
    "load_embeddings",
    "EMBEDDING_KINDS",
    "format_table",
    "write_json",
    "read_jsonl",
    "to_jsonable",
    "plot_embedding_2d",
    "plot_curves",
]
