"""Scale-out on Ray: ingest as a Ray Data job, sharded index builds, bulk k-NN search."""
