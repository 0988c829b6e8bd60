"""Preview PNGs: one per spectrum, made in parallel, only where missing,
never half-written (retrspect.ingest.previews)."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from retrspect.ingest.previews import make_previews

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture()
def staged(tmp_path, checkout):
    """Two real files (one star, one file of 7 MaNGA spaxels) and one broken,
    from the checkout's staged bundled spectra."""
    staged_data = checkout / "resdir" / "data"
    data = tmp_path / "data"
    (data / "miles").mkdir(parents=True)
    (data / "manga").mkdir()
    shutil.copy(sorted((staged_data / "miles").iterdir())[0], data / "miles")
    shutil.copy(staged_data / "manga" / "MaNGA_test_spectra.fits.gz",
                data / "manga")
    (data / "miles" / "broken.fits").write_bytes(b"SIMPLE  =  not fits")
    return data


def test_one_png_per_spectrum_then_nothing_to_do(staged, tmp_path):
    from matplotlib.image import imread
    out = tmp_path / "previews"
    made, failed = make_previews(staged, out, workers=2)
    pngs = sorted(out.glob("*.png"))
    assert (made, failed) == (len(pngs), 1)
    assert len(pngs) == 1 + 7
    assert {p.stem for p in pngs} >= {"manga_test_spectra_0",
                                      "manga_test_spectra_6"}
    assert not list(out.glob("*.part"))
    for png in pngs:
        assert png.read_bytes()[:8] == PNG_MAGIC
        image = imread(png)
        assert image.shape[:2] == (176, 480)  # 6 x 2.2 inches at 80 dpi
        assert np.ptp(image[..., :3]) > 0.5     # a drawn line, not blank

    stamps = {p: p.stat().st_mtime_ns for p in pngs}
    assert make_previews(staged, out, workers=2) == (0, 1)
    assert {p: p.stat().st_mtime_ns for p in pngs} == stamps
