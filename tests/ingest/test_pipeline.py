"""The ingest pipeline on hostile files: every one skipped with its reason, the good one kept.
"""
from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

from hypothesis.configuration import set_hypothesis_home_dir

from retrspect.ingest.bundled import package_dir
from retrspect.ingest.pipeline import IngestOptions, process_chunk

set_hypothesis_home_dir(str(Path(tempfile.gettempdir()) / "retrspect-hypothesis"))

TEMPLATES = package_dir("mangadap") / "data" / "spectral_templates"


MILES = TEMPLATES / "miles" / "MILES_res2.50_star_m0028V.fits"


#: peak resident memory a refusal may add.  Reading the 200 MB image or
#: any bomb would add far more; the largest refusal here (a gzipped VOTable
#: read up to the 32 MiB text limit) adds about 20 MB.
MAX_PEAK_GROWTH = 64 * 2**20


def test_pipeline_skips_every_hostile_file_and_keeps_the_good_one(corpus,
                                                                 watchdog, measured):
    directory = corpus[0].path.parent
    good = directory / "good_miles.fits"
    shutil.copy(MILES, good)
    try:
        paths = [str(good)] + [str(h.path) for h in corpus]
        result, seconds, growth = measured(
            process_chunk, paths, str(directory),
            IngestOptions(use_models=False, workers=1, progress=False))
    finally:
        good.unlink()
    assert not isinstance(result, Exception), result
    assert [row["source_file"] for row in result.rows] == ["good_miles.fits"]
    assert result.rows[0]["obs_id"] == "good_miles"
    reasons = dict(result.skipped)
    assert sorted(reasons) == sorted(h.name for h in corpus)
    for hostile in corpus:
        assert re.search(hostile.reason, reasons[hostile.name], re.I), (
            hostile.name, reasons[hostile.name])
    assert seconds < 60
    assert growth < MAX_PEAK_GROWTH
