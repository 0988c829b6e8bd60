"""Decoders (issue 17): the published latent of each shipped VAE decoded
back to a spectrum, cut out of the VAE's own graph (models.export)."""
import numpy as np
import onnxruntime as ort
import pytest

from retrspect.ingest.contract import DECODER_DIR, file_name
from retrspect.ingest.infer import SHIPPED_MODEL_DIR, read_description
from retrspect.ingest.preprocess import prepare_batch
from retrspect.ingest.sources import read_source
from retrspect.models import export as X

def _is_vae(path) -> bool:
    try:
        X.decoder_bytes(path)
    except ValueError:
        return False
    return True


VAES = [p for p in sorted(SHIPPED_MODEL_DIR.glob("*-*.onnx")) if _is_vae(p)]


def _decoder_of(path):
    stem = path.stem.rsplit("-", 1)[0]
    (decoder,) = (SHIPPED_MODEL_DIR / DECODER_DIR).glob(f"{stem}-*.onnx")
    return decoder


def test_every_shipped_vae_has_its_decoder():
    assert sorted(p.stem.rsplit("-", 1)[0] for p in VAES) == ["halpha", "vae"]
    for path in VAES:
        decoder = _decoder_of(path)
        data = decoder.read_bytes()
        assert decoder.name == file_name(path.stem.rsplit("-", 1)[0], data)
        assert data == X.decoder_bytes(path)           # made from this very encoder


@pytest.mark.parametrize("path", VAES, ids=lambda p: p.stem)
def test_decoding_the_published_latent_gives_the_vaes_reconstruction(path, checkout):
    """Real MILES spectra: encoder -> published latent -> decoder equals the
    encoder's own reconstruction."""
    description = read_description(path)
    files = sorted((checkout / "resdir" / "data" / "miles").glob("*.fits"))[:8]
    flux, weight = prepare_batch([read_source(str(f))[0] for f in files], description.grid)
    encoder = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outputs = dict(zip([o.name for o in encoder.get_outputs()],
                       encoder.run(None, {"flux": flux, "weight": weight})))
    decoder = ort.InferenceSession(str(_decoder_of(path)), providers=["CPUExecutionProvider"])
    (decoded,) = decoder.run(None, {"latent": outputs["latent_mean"]})
    assert decoded.shape == outputs["reconstruction"].shape == (8, description.grid.npix)
    np.testing.assert_allclose(decoded, outputs["reconstruction"], atol=1e-5)
    # and the metadata says whose decoder it is
    assert read_description(path).model_id in _decoder_of(path).read_bytes().decode(
        "latin-1")
