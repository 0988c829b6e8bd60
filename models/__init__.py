"""retrspect: models."""
