"""retrspect: ingest."""
