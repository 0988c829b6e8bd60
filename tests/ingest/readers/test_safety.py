"""The safety layer on damaged or disguised files (the hostile corpus is in test_hostile.py).
"""
import gzip
import shutil


from retrspect.ingest.bundled import package_dir
from retrspect.ingest.readers import read_spectra

TEMPLATES = package_dir("mangadap") / "data" / "spectral_templates"


LINETOOLS = package_dir("linetools") / "spectra" / "tests" / "files"


MILES_M0001 = TEMPLATES / "miles" / "MILES_res2.50_star_m0001V.fits"


def test_gzip_fits_without_gz_suffix(tmp_path):
    path = tmp_path / "spectrum.dat"
    with open(MILES_M0001, "rb") as source, gzip.open(path, "wb") as target:
        shutil.copyfileobj(source, target)
    spectrum = read_spectra(path)[0]
    assert len(spectrum.wavelength) == 4300
    assert spectrum.medium == "air"


def test_truncated_fits(tmp_path, assert_reader_error):
    path = tmp_path / "truncated.fits"
    path.write_bytes(MILES_M0001.read_bytes()[:20000])
    assert_reader_error(path, "truncated")


def test_truncated_gzip_fits(tmp_path, assert_reader_error):
    # Cut inside the SPECTRUM extension of the real XQ-100 file.
    path = tmp_path / "truncated.fits.gz"
    path.write_bytes((LINETOOLS / "XShooter_XQ100.fits.gz").read_bytes()[:100000])
    assert_reader_error(path, "truncated or corrupt gzip file")


def test_text_file_named_fits(tmp_path, assert_reader_error):
    path = tmp_path / "notes.fits"
    path.write_text("wavelength flux\n4000 1.0\n")
    assert_reader_error(path, "not a FITS file, VOTable, or CSV")


def test_missing_file(tmp_path, assert_reader_error):
    assert_reader_error(tmp_path / "absent.fits", "no such file")
