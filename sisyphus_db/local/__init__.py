"""Find this object: region vectors, bag of local features and class focus.

- grid.py      the R-MAC-style multi-scale region grid over a feature map, boxes in pixels
- features.py  unpooled feature maps of a model (the trunk without pooling) at a local size
- regions.py   region vectors (max/GeM per region, L2) and `sisyphus regions build`
- region_search.py  `search --method regions`: the region index, best region per frame
- focus.py     `search --focus CLASS`: the feature map re-weighted by the class's classifier row
- bow/         `sisyphus bow build` and `search --method bow`
"""
