"""Input pipelines (grain): image sources, the training iterator and evaluation batches.

sources.py opens the records, transforms.py decodes, crops and augments one image, skips.py
counts what was dropped, pipeline.py assembles them; the public names are re-exported here.

Sources are random-access sequences of encoded records `(bytes, name)`:

  source = image_source("bundled")          # the photos shipped with the package
  source = image_source("/data/photos")     # a folder of images (recursive, any common format)
  source = image_source("/data/prepared")   # a tfds ArrayRecord dataset (`colorjax prepare`, or
                                            # one tfds prepared, e.g. imagenet2012): feature 'image'
  train_source, eval_source = split_source("/data/photos", eval_fraction=0.1)

Training yields `{'rgb': uint8 (B, crop, crop, 3)}` per process, deterministic for a seed and
resumable through `get_state()` / `set_state()`:

  it = create_train_iterator(train_source, batch_size_per_process=8, crop_size=176, seed=0,
                             process_index=jax.process_index(), process_count=jax.process_count(),
                             min_chroma=3.0, augment=dict(flip=True))
  batch = next(it); it.stats  # DataStats: unreadable files skipped, near-gray images dropped

Evaluation is the fixed `S x S` protocol (resize the short side to S, center crop), padded batches:

  for batch in create_eval_batches(eval_source, image_size=256, batch_size=16): ...
"""
from colorjax.data.pipeline import create_eval_batches, create_train_iterator
from colorjax.data.skips import MAX_LISTED_SKIPS, DataStats, TrainIterator
from colorjax.data.sources import (TFDS_IMAGE_KEY, TFDS_NAME_KEYS, FolderSource, ImageSource,
                                   SubsetSource, TfdsSource, bundled_photos_dir, find_tfds_dir,
                                   image_source, split_source)
from colorjax.data.transforms import (CUTOUT_FILL, Augment, EvalExample, TrainExample,
                                      center_crop_resize)
