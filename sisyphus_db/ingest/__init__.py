"""`sisyphus ingest`: files on disk -> key frames -> vectors -> rows in PostgreSQL."""
