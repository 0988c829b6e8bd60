"""Preview PNGs: one per spectrum, made in parallel, only where missing,
never half-written; and the SSAP preview link serves them."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from retrspect.ingest.previews import make_previews

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "resdir" / "data"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture()
def staged(tmp_path):
    """Two real files (one star, one file of 7 MaNGA spaxels) and one broken."""
    data = tmp_path / "data"
    (data / "miles").mkdir(parents=True)
    (data / "manga").mkdir()
    shutil.copy(sorted((DATA / "miles").iterdir())[0], data / "miles")
    shutil.copy(DATA / "manga" / "MaNGA_test_spectra.fits.gz", data / "manga")
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


@pytest.mark.stack
def test_ssap_preview_link_serves_the_png(ssa):
    import requests
    record = ssa.search(TARGETNAME="HD004307")[0]
    response = requests.get(record["preview"], timeout=60)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    made = REPO / "resdir" / "previews" / f"{record['obs_id']}.png"
    assert response.content == made.read_bytes()
