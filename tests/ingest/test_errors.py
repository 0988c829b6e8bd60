"""One exception base, picklable, carrying the file and the reason
(retrspect.ingest.errors): errors raised in ingest worker processes (process
pools, Dask) must arrive whole."""
from __future__ import annotations

import pickle
from concurrent.futures import ProcessPoolExecutor

import pytest

import retrspect.vo_services.byexample  # noqa: F401  (defines UploadError)
import retrspect.vo_services.health  # noqa: F401  (defines CheckFailed)
import retrspect.vo_services.uploads  # noqa: F401  (defines UploadRefused)
from retrspect.ingest.errors import ReaderError, RetrspectError
from retrspect.ingest.readers import read_spectra


def _all_subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _all_subclasses(sub)


def test_every_error_of_the_project_has_the_one_base():
    names = {cls.__name__ for cls in _all_subclasses(RetrspectError)}
    assert names >= {"ReaderError", "ModelError", "UploadError",
                     "UploadRefused", "CheckFailed", "ServerError",
                     "VectorLiteralError", "NoLatentError"}


@pytest.mark.parametrize("cls", sorted(_all_subclasses(RetrspectError),
                                       key=lambda c: c.__name__),
                         ids=lambda c: c.__name__)
def test_errors_pickle_with_file_and_reason(cls):
    error = cls("/data/spectrum.fits", "flux is all NaN")
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is cls
    assert (again.path, again.reason) == ("/data/spectrum.fits",
                                          "flux is all NaN")
    assert str(again) == "/data/spectrum.fits: flux is all NaN"
    reason_only = pickle.loads(pickle.dumps(cls("k must be between 1 and 100")))
    assert (reason_only.path, str(reason_only)) == (
        None, "k must be between 1 and 100")


def _read(path):
    return read_spectra(path)


def test_a_reader_error_crosses_a_process_boundary(tmp_path):
    broken = tmp_path / "broken.fits"
    broken.write_bytes(b"SIMPLE  =                    T" + b" " * 50)
    with ProcessPoolExecutor(1) as pool:
        with pytest.raises(ReaderError) as caught:
            pool.submit(_read, broken).result()
    assert caught.value.path == str(broken)
    assert caught.value.reason
