"""Active indexing (Fernandez et al., ICLR 2023): change images imperceptibly before they are
released so that their features sit close to their quantized representation in a faiss
index, and edited copies of them stay in the right cell.

Modules, one job each: `target` (the quantized target of a feature in an index),
`heatmap` (where in the picture a change is least visible), `quality` (PSNR and SSIM),
`imageio` (reading and writing pictures in their own mode and format), `optimise` (the
gradient loop), `manifest` (the JSON written next to every activated image, read back
by the ingest) and `runner` (batches, resumption, errors).

Nothing here is imported eagerly: the ingest workers read manifests without torch.
"""
