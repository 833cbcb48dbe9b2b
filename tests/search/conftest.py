from search._common import checkpoint, flat_folder, other_checkpoint  # noqa: F401  (the fixtures)
