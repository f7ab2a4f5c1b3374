"""Image data sets for the image-side latent EBM prior models: Hub sets, scikit-learn digits, local files.

Every loader returns an :class:`ImageSet`: ``train`` / ``valid`` / ``test`` float32 tensors shaped
``(N, C, H, W)`` and scaled to ``[-1, 1]``, optional int64 labels, and ``stats`` (where the data came from,
counts, what was converted).

Where the data comes from (:func:`load_images`):

* a **local path** (``name_or_path`` is an existing file or directory, or ``data_dir/<name>`` exists):

  (a) a directory with ``train/``, ``test/`` and optionally ``valid/`` (aliases ``validation/``, ``val/``)
      holding image files (png, jpg, jpeg, bmp, webp), directly or in one level of class subfolders
      (sorted folder names -> label ids 0, 1, ...); without a validation folder ``valid_fraction`` of train
      is carved off with ``seed``;
  (b) a flat directory of image files (or of class subfolders), split deterministically by ``seed`` into
      train / valid / test = 1 - valid_fraction - 0.05 / valid_fraction / 0.05 (90/5/5 by default);
  (c) an ``.npz`` file with ``x_train``, ``x_test`` (optional ``x_valid``) and matching optional ``y_*``
      label arrays, or with ``x`` (and optional ``y``), split like (b);
  (d) an ``.npy`` file holding one image array (no labels), split like (b).

  A directory holding no images but exactly one ``.npz`` / ``.npy`` file is read as that file.
* the **Hugging Face Hub** (``svhn``, ``cifar10``, ``mnist``, ``celeba``) via :func:`datasets.load_dataset`
  (downloaded once, then read from the ``datasets`` cache, which also works offline);
* **scikit-learn's bundled 8x8 digits** (``digits``): always available offline.

Image files are converted to the requested channel count (PIL mode ``L`` or ``RGB``) and resized to
``image_size`` (bilinear, antialiased by PIL) when they differ. Arrays are never resized or re-channelled:
an array with the wrong size or channel count is an error naming ``data.image_size`` / ``data.channels``.

Array value rule (:func:`array_to_images`): integer arrays must lie in ``[0, 255]`` and map by
``x / 127.5 - 1``; float arrays with no negative value and maximum <= 1 are taken as ``[0, 1]`` and map by
``2 x - 1``; other float arrays within ``[-1, 1]`` are kept; anything else (or NaN / inf) is an error.
Array layout rule: 3-d arrays are ``(N, H, W)`` (one channel); 4-d arrays are ``(N, H, W, C)`` when only the
last axis has 1 or 3 entries, ``(N, C, H, W)`` when only axis 1 has, and when both do, whichever reading
matches the requested ``(channels, image_size)`` (``(N, H, W, C)`` if neither does).

``datasets``, ``PIL`` and ``sklearn`` are imported only when used.

The modules: :mod:`.imageset` (the container, array conversions, splits), :mod:`.local` (folders and arrays),
:mod:`.digits`, :mod:`.hub`, :mod:`.load` (the entry point, the anomaly split), :mod:`.batching`.
"""
from .batching import ImageBatcher
from .imageset import IMAGE_EXTENSIONS, SPLITS, ImageDataError, ImageSet, array_to_images
from .load import BUILTIN_SETS, held_out_class_split, load_images
from .local import LOCAL_LAYOUTS

__all__ = ["ImageSet", "ImageDataError", "ImageBatcher", "load_images", "held_out_class_split", "array_to_images",
           "SPLITS", "IMAGE_EXTENSIONS", "BUILTIN_SETS", "LOCAL_LAYOUTS"]
