"""Bag of local convolutional features (Mohedano et al., "Bags of Local Convolutional Features
for Scalable Instance Search"): every position of a frame's feature map is a local
descriptor, assigned to a visual word; frames are scored through an inverted file with
tf-idf weights, the top ones re-ranked spatially with their assignment maps, and the
query optionally expanded with the best localised windows.

- vocabulary.py  descriptors (L2, PCA, L2), faiss k-means, the vocabulary file
- invfile.py     the inverted file (word -> frames with counts), tf-idf scoring
- spatial.py     the best-matching window of an assignment map
- build.py       `sisyphus bow build`
- search.py      `search --method bow`
"""
