"""The query server: FastAPI app, HTTP API and the review page."""
