"""The SSAP preview link serves the preview PNG made for the spectrum."""
from __future__ import annotations

import requests


def test_ssap_preview_link_serves_the_png(ssa, checkout):
    record = ssa.search(TARGETNAME="HD004307")[0]
    response = requests.get(record["preview"], timeout=60)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    made = checkout / "resdir" / "previews" / f"{record['obs_id']}.png"
    assert response.content == made.read_bytes()
