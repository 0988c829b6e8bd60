"""The latent spaces the archive publishes, as rows of the TAP table
``retrspect.spaces``: what a TOPCAT or pyvo user needs to find a space and
search in it (its vectors' table and column, grid, metric, dimension,
model version, and how many spectra it holds).

Today there is one space, ``generic``: the VAE's latent in
``ml_results.latent``.  ``retrspect import`` writes what the models say of
themselves into ``space_models``; the TAP view ``spaces`` adds the counts,
so they follow the data whoever changes it.
"""
from __future__ import annotations

from retrspect.ingest.preprocess import MIN_GRID_COVERAGE
from retrspect.vo_services.similarity import latent_column, table_models

#: The space of the shipped VAE.
GENERIC = "generic"


def space_rows(rd) -> list[dict]:
    """One row per published space (none when no VAE is installed); the
    view ``spaces`` adds the counts, live."""
    column = latent_column(rd)
    vae = table_models(rd).models.get("vae")
    if vae is None:
        return []
    grid = vae.grid
    return [{
        "space_name": GENERIC,
        "description": (f"Latent means of the variational autoencoder {vae.model_id}, "
                        f"trained on {vae.metadata.get('training_data', 'n/a')}"),
        "model": vae.model_id, "version": vae.version,
        "vector_table": column.table, "vector_column": "latent",
        "metric": vae.metric, "dimension": vae.latent_dim,
        "wave_min": round(float(grid.wavelength[0]), 3),
        "wave_max": round(float(grid.wavelength[-1]), 3),
        "npix": grid.npix, "resolving_power": float(grid.resolving_power),
        "medium": "vacuum", "frame": "observed", "min_coverage": MIN_GRID_COVERAGE,
    }]
