"""faiss sidecar index: choose, train, build, update, tune, search, verify; CPU or GPU.

Works on numpy arrays only; the database layer feeds vectors and frame ids. faiss ids are
frame ids, vectors are unit float32 and every distance reported is cosine distance.
"""

from sisyphus_db.ann.build import add_vectors, build_index, index_ids, remove_ids
from sisyphus_db.ann.device import resolve_faiss_device, to_cpu, to_gpu
from sisyphus_db.ann.factory import FactorySpec, choose_factory, validate_factory
from sisyphus_db.ann.files import file_sha256, read_index, write_index_atomic
from sisyphus_db.ann.knn import knn_graph
from sisyphus_db.ann.params import apply_search_params
from sisyphus_db.ann.search import exact_rerank, exact_search, search
from sisyphus_db.ann.synthetic import clustered_vectors
from sisyphus_db.ann.tune import TuneResult, TuneRow, tune

__all__ = [
    "FactorySpec",
    "TuneResult",
    "TuneRow",
    "add_vectors",
    "apply_search_params",
    "build_index",
    "choose_factory",
    "clustered_vectors",
    "exact_rerank",
    "exact_search",
    "file_sha256",
    "index_ids",
    "knn_graph",
    "read_index",
    "remove_ids",
    "resolve_faiss_device",
    "search",
    "to_cpu",
    "to_gpu",
    "tune",
    "validate_factory",
    "write_index_atomic",
]
