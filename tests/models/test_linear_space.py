"""The linear window-space VAE (models.nets.LinearSpaceVAE): its published
latent is the projection onto the decoder's subspace in an orthonormal
basis, so latent distances are the projected spectra's distances."""
import numpy as np
import pytest
import torch

from retrspect.ingest.preprocess import MODEL_GRID
from retrspect.models import export as X
from retrspect.models.nets import LinearSpaceVAE


@pytest.fixture(scope="module")
def published(held_out_spectra):
    """A model started from the spectra's principal components, its decoder
    then skewed as training would leave it (not orthonormal), published."""
    flux, weight = (torch.as_tensor(a) for a in held_out_spectra)
    torch.manual_seed(3)
    model = LinearSpaceVAE(MODEL_GRID.npix, latent_dim=12)
    model.start_from_pca(flux, weight)
    with torch.no_grad():
        model.decoder.weight.copy_(model.decoder.weight
                                   @ (torch.eye(12) + 0.3 * torch.randn(12, 12)))
    model.isometrise(flux, weight)
    return model.eval(), flux, weight


def test_decoder_basis_is_orthonormal(published):
    model, _, _ = published
    u = model.decoder.weight.detach().double()
    assert torch.allclose(u.T @ u, torch.eye(12, dtype=torch.float64), atol=1e-5)


def test_latent_distances_equal_projected_spectra_distances(published):
    model, flux, weight = published
    with torch.no_grad():
        latent, _, reconstruction, _ = model(flux, weight)
    z = latent.double().numpy()
    rec = reconstruction.double().numpy()
    dz = np.linalg.norm(z[:, None] - z[None], axis=-1)
    drec = np.linalg.norm(rec[:, None] - rec[None], axis=-1)
    assert dz.max() > 0.1
    np.testing.assert_allclose(dz, drec, atol=2e-4 * dz.max())


def test_projection_of_a_decoded_spectrum_is_its_latent(published):
    """Encoding what the decoder makes of a latent gives that latent back:
    the encoder is the projection onto the decoder's subspace (bias included)."""
    model, flux, weight = published
    with torch.no_grad():
        mean, _ = model.encode(flux[:5], weight[:5])
        again, _ = model.encode(model.decode(mean), torch.ones_like(flux[:5]))
    np.testing.assert_allclose(again.numpy(), mean.numpy(), atol=1e-4)


def test_published_latent_is_centred_and_variance_is_the_residual(published):
    model, flux, weight = published
    with torch.no_grad():
        latent, logvar, reconstruction, _ = model(flux, weight)
    assert float(latent.mean(0).abs().max()) < 1e-4
    covered = weight > 0
    residual = float(((reconstruction - flux) ** 2)[covered].mean())
    assert float(logvar[0, 0].exp()) == pytest.approx(residual, rel=1e-3)


def test_onnx_equals_torch(published, tmp_path):
    model, flux, weight = published
    path = X.export(model, "vae", MODEL_GRID, tmp_path)
    diffs = X.compare_with_torch(model, path, flux.numpy(), weight.numpy())
    assert max(v for k, v in diffs.items() if k != "max_relative") < 1e-4
