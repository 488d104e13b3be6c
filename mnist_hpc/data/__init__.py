"""MNIST in memory and in batches: the files (``mnist_files``: find, verify, parse), the
splits, shards and evaluation slices (``dataset``), augmentation on the device
(``augment``) and the one iterator of an epoch's training batches (``batches``: order, this
rank's slice, augmentation, the cast to the training input); a folder of image files
as digits (``images``, for the evaluate command).

Knows of ranks only through the (rank, world size) it is given. May import: ``job``
(interruptible waits), ``config``, ``seeds``, ``errors``, ``files``.
"""
