"""Video-level retrieval: segment vectors, video-to-video alignment, colour, perceptual hashes and sound.

Each module has one job; the pure ones (windows, align, palette, hashing, audio features)
take numpy arrays and know nothing of the database, so they are tested on generated data.
"""
