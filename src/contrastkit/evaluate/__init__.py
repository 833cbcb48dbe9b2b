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
* :mod:`.protocols`: :func:`evaluate_checkpoint` (``contrastkit eval``), :func:`run_protocol` on a model in memory.
* :mod:`.options`: which ``eval`` option applies to which protocol (no torch).

Accuracies and retrieval metrics are fractions in [0, 1].
"""
from __future__ import annotations

from ..runtime.lazy import lazy_getattr

#: public name -> the module that defines it; imported on first use, so that the command line can read
#: :mod:`.options` without importing torch
_LAZY = {
    "export_embeddings": ".embed", "load_embeddings": ".embed", "EMBEDDING_KINDS": ".embed",
    "extract_features": ".features", "finetune": ".fine_tune", "random_crop_flip": ".fine_tune",
    "knn_accuracy": ".knn", "linear_eval": ".linear", "standardize_features": ".linear",
    "WEIGHT_DECAY_GRID": ".linear", "plot_curves": ".plots", "plot_embedding_2d": ".plots",
    "format_table": ".report", "read_jsonl": ".report", "to_jsonable": ".report", "write_json": ".report",
    "retrieval_metrics": ".retrieval", "classifier_accuracy": ".classify",
    "class_balanced_subset": "..data.subsets", "dataset_labels": "..data.subsets",  # a data concern, re-exported
    "evaluate_checkpoint": ".protocols", "run_protocol": ".protocols", "evaluation_data": ".protocols",
    "PROTOCOLS": ".options",
}

__all__ = sorted(_LAZY)


__getattr__ = lazy_getattr(__name__, _LAZY, globals())


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
