"""The single home of wavelength conventions and (later) the model grid.

Training and ingest both import this module, so a model and the archive that
runs it can never disagree on how a spectrum is put onto the grid.
"""
from __future__ import annotations

import numpy as np
from astropy import units as u


def air_to_vacuum(wavelength: u.Quantity) -> u.Quantity:
    """Convert air wavelengths to vacuum (IAU standard, Morton 1991 / Ciddor 1996).

    Parameters
    ----------
    wavelength : Quantity, shape (N,)
        Air wavelengths (any length unit).

    Returns
    -------
    Quantity, shape (N,)
        Vacuum wavelengths in the unit of the input.

    Notes
    -----
    Uses the refractive index of standard air from Ciddor (1996) in the form
    adopted by the IAU and SDSS; below 2000 A air and vacuum coincide by
    convention, so those values are returned unchanged.
    """
    unit = wavelength.unit
    air = wavelength.to_value(u.AA)
    sigma2 = (1e4 / air) ** 2
    n = (1.0 + 8.336624212083e-5
         + 2.408926869968e-2 / (1.301065924522e2 - sigma2)
         + 1.599740894897e-4 / (3.892568793293e1 - sigma2))
    vacuum = np.where(air > 2000.0, air * n, air)
    return (vacuum * u.AA).to(unit)


def vacuum_wavelength(spectrum) -> u.Quantity:
    """The spectrum's wavelengths in vacuum, in Angstrom, whatever the file gave."""
    wave = spectrum.wavelength.to(u.AA)
    if spectrum.medium == "air":
        return air_to_vacuum(wave)
    return wave
