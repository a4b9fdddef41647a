"""sisyphus-db: find rare scenes in huge image and video corpora."""

from sisyphus_db.errors import SisyphusError

__version__ = "0.1.0"
__all__ = ["SisyphusError", "__version__"]
