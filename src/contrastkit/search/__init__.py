"""Embed, index and search your own images; find near-duplicates.

* :func:`embed_to_files`: h of every image of a data set or folder (labelled or not) to npy/csv/json,
  streaming and resumable, unreadable images counted and listed (``contrastkit embed``).
* :func:`build_index`: a search index of a folder of images (``contrastkit index``); ``update=True``
  adds new and changed images and drops the ones that are gone, without embedding the others again;
  ``rebuild=True`` embeds them all again with the checkpoint's current weights.
* :func:`search`: the nearest indexed images to query images (``contrastkit search --query``).
* :func:`near_duplicates`: groups of exact and near-duplicate images, the threshold calibrated on the index's
  own images (``contrastkit search --near-duplicates``); :func:`find_near_duplicates` at a given threshold.
* :func:`write_search_outputs`: ``neighbours.png`` and a self-contained ``gallery.html``;
  :func:`write_duplicates_html`: the near-duplicate groups side by side.

Search is by cosine similarity of L2-normalised h. FAISS (``pip install 'contrastkit[faiss]'``) is used
when installed; without it, exact search runs as chunked matrix products in torch.
"""
from .backends import KINDS, FaissSearcher, exact_topk, faiss_available, recall_at_k
from .calibrate import Calibration, calibrate_index, choose_threshold
from .dedup import DuplicateGroup, NearDuplicates, near_duplicates
from .duplicates import find_near_duplicates, near_duplicate_groups
from .edits import EDIT_KINDS, apply_edit
from .embed_files import embed_to_files
from .encoder import FrozenEncoder, fingerprint_of, load_frozen_encoder
from .gallery import (duplicates_output, relative_paths, search_output, write_duplicates_html, write_gallery_html,
                      write_neighbours_png, write_search_outputs)
from .build import build_index
from .index import ImageIndex, IndexMismatchError, list_images
from .query import embed_images, search
from .pixels import exact_duplicate_groups, pixel_hash
from .stream import StreamResult, embed_stream, iter_shards

__all__ = [
    "embed_to_files", "build_index", "search", "find_near_duplicates", "near_duplicate_groups",
    "write_search_outputs", "search_output", "relative_paths", "write_neighbours_png", "write_gallery_html",
    "ImageIndex", "IndexMismatchError", "list_images", "FrozenEncoder", "load_frozen_encoder", "fingerprint_of",
    "embed_images", "embed_stream", "iter_shards", "StreamResult", "KINDS", "FaissSearcher", "exact_topk",
    "faiss_available", "recall_at_k",
    "near_duplicates", "NearDuplicates", "DuplicateGroup", "Calibration", "calibrate_index", "choose_threshold",
    "EDIT_KINDS", "apply_edit", "pixel_hash", "exact_duplicate_groups", "write_duplicates_html", "duplicates_output",
]
