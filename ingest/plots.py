"""Drawing spectra as the archive serves them: the one home of the axes and
the data every plot of a spectrum uses (preview PNGs, search-by-example
overlays).  matplotlib is imported only when a plot is made."""
from __future__ import annotations

import numpy as np

from retrspect.ingest.sources import served_arrays

#: the x axis of every plot of a served spectrum
WAVELENGTH_LABEL = "vacuum wavelength [Angstrom]"


def new_axes(width: float, height: float, dpi: int):
    """A figure and axes on the Agg backend, styled for small plots."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(width, height), dpi=dpi)
    ax.set_xlabel(WAVELENGTH_LABEL, fontsize=7)
    ax.tick_params(labelsize=6)
    return fig, ax


def served_xy(spectrum, *, normalise: bool = False):
    """(wavelength, flux) as served (masked pixels NaN); with ``normalise``
    the flux is divided by its median absolute value, so spectra in other
    units can be overlaid."""
    arrays = served_arrays(spectrum)
    flux = arrays["flux"]
    if normalise:
        flux = flux / (np.nanmedian(np.abs(flux)) or 1.0)
    return arrays["spectral"], flux
