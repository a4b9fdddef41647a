"""The labelling loop: labels with provenance, discovery, propagation, duplicates, clusters, exports."""
