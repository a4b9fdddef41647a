"""Evaluation: retrieval and copy-detection metrics, augmentations, a synthetic drive.

Modules are imported directly (e.g. `sisyphus_db.evaluate.metrics`) so that using the
metrics does not pull in PyAV or the video renderer.

- `metrics`: r@k, MRR, copy-detection µAP, precision@k, k-NN accuracy, review effort.
- `augment`: the Active Indexing image transformations, seeded.
- `drive_video`: a drive video with known road-works intervals, for the demo
  (`drive_scene` renders its frames, `drive_props` paints the objects in them).
"""
