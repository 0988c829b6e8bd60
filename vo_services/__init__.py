"""retrspect: vo_services."""
