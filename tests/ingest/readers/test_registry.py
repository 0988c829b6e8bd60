"""The registry of layouts.
"""

import numpy as np
from astropy.io import fits

from retrspect.ingest.readers import FORMATS

def test_fits_in_no_known_layout(tmp_path, assert_reader_error):
    path = tmp_path / "cube.fits"
    fits.PrimaryHDU(np.ones((3, 4, 5), dtype=np.float32)).writeto(path)
    assert_reader_error(path, "no known spectrum layout")


def test_registry_names_are_unique():
    names = [fmt.name for fmt in FORMATS]
    assert len(names) == len(set(names))
