"""The archive's models directory (vo_services.deploy.install_shipped_models):
deploy brings in the shipped models and keeps the spaces the archive
trained itself, so a reinstall never loses them."""
from retrspect.vo_services.deploy import SHIPPED_MANIFEST, install_shipped_models


def _ship(directory, *names):
    (directory / "cards").mkdir(parents=True, exist_ok=True)
    for name in names:
        (directory / name).write_bytes(name.encode())
        (directory / "cards" / f"{name.rsplit('-', 1)[0]}.md").write_text(f"card of {name}")


def test_shipped_models_replace_their_old_versions_and_trained_spaces_stay(tmp_path):
    shipped, archive = tmp_path / "shipped", tmp_path / "archive"
    _ship(shipped, "vae-111.onnx", "halpha-222.onnx")
    _ship(archive, "vae-000.onnx")                      # a previous deploy's
    (archive / SHIPPED_MANIFEST).write_text("vae-000.onnx\n")
    _ship(archive, "halpha-999.onnx", "mine-333.onnx")  # trained by the archive
    (shipped / "decoders").mkdir()
    (shipped / "decoders" / "vae-aaa.onnx").write_bytes(b"decoder of vae-111")
    (shipped / "decoders" / "halpha-bbb.onnx").write_bytes(b"decoder of halpha-222")
    (archive / "decoders").mkdir()
    (archive / "decoders" / "halpha-ccc.onnx").write_bytes(b"decoder of halpha-999")
    changes = install_shipped_models(shipped, archive)
    assert sorted(p.name for p in (archive / "decoders").glob("*.onnx")) == [
        "halpha-ccc.onnx", "vae-aaa.onnx"]          # the archive's own decoder stays
    assert sorted(p.name for p in archive.glob("*.onnx")) == [
        "halpha-999.onnx", "mine-333.onnx", "vae-111.onnx"]
    assert (archive / "vae-111.onnx").read_bytes() == b"vae-111.onnx"
    assert (archive / "cards" / "vae.md").read_text() == "card of vae-111.onnx"
    assert (archive / "cards" / "halpha.md").read_text() == "card of halpha-999.onnx"
    assert "kept the archive's own halpha-999.onnx (shipped halpha-222.onnx not installed)" \
        in changes
    assert (archive / SHIPPED_MANIFEST).read_text() == "decoders/vae-aaa.onnx\nvae-111.onnx\n"
    # a second deploy changes nothing
    again = install_shipped_models(shipped, archive)
    assert not [c for c in again if not c.startswith("kept")]


def test_a_model_no_longer_shipped_is_removed_with_its_card(tmp_path):
    shipped, archive = tmp_path / "shipped", tmp_path / "archive"
    _ship(shipped, "vae-111.onnx", "old_space-444.onnx")
    install_shipped_models(shipped, archive)
    (shipped / "old_space-444.onnx").unlink()
    changes = install_shipped_models(shipped, archive)
    assert changes == ["removed old_space-444.onnx"]
    assert [p.name for p in archive.glob("*.onnx")] == ["vae-111.onnx"]
    assert not (archive / "cards" / "old_space.md").exists()
