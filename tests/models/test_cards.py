"""Model cards: markdown templates filled from the figures (no checkpoints).

The cards render here from what the checkout commits: the shipped ONNX files'
metadata, ``models/plots/latent_analysis.json``, the benchmark and equality
records, the supervision sweep and ``models/benchmarks/card_records.json``.
A number in a card must follow its source: change the metric, the target or
the record and the text changes; and the templates hold no typed-in figure.
"""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from retrspect.ingest.infer import load_model
from retrspect.models import cards
from retrspect.models.export import shipped

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "models"
TEMPLATES = MODELS / "cards" / "templates"
NAMES = ("vae", "classifier", "velocity")
MAKERS = {"vae": cards.vae_card, "classifier": cards.classifier_card,
          "velocity": cards.velocity_card}

#: Digits a template may hold outside placeholders: names, never figures.
ALLOWED = (
    r"\b1-D\b",                                   # "1-D convolutional": a kind of layer
    r"\bfloat32\b",                               # the inputs' dtype, a type name
    r"\bL[12]\b",                                 # the L1 loss, the L2 distance
    r"\^2|\(1\+z\)",                              # a square and 1+z inside formulas
    r"(?:et al\.|Mamajek)\s+\(?(?:19|20)\d\d\)?",  # citations: Sedaghat et al. (2021)
    r"\[?\b[A-Z][a-z]? [IVX]+\]? \d{4}\b",        # lines by wavelength: [O I] 5577, Ca I 4227
    r"\b[OBAFGKM]\d(?:-[OBAFGKM]\d)?\b",          # MK types: K0, 'G8 V', G8-G9
    r"\bNGC \d+\b",                               # catalogue designations: NGC 4151
    r"hit@\d+|@\$\w+",                            # metric names: hit@1, hit@10
    r"`[\w/.-]+\.json`",                          # file names: `models/benchmarks/x.json`
    r"sqrt\(p\(1-p\)/n\)",                        # the binomial standard error
)
PLACEHOLDER = r"\$(?:\{[A-Za-z_]\w*\}|[A-Za-z_]\w*)"
MARKER = r"(?m)^<!-- (?:line|block): [\w.-]+ -->$"


def typed_numbers(text):
    """Lines of a template that still hold a digit once placeholders, fragment
    markers and the allowed names are taken out."""
    for pattern in (MARKER, PLACEHOLDER, *ALLOWED):
        text = re.sub(pattern, " ", text)
    return [line.strip() for line in text.splitlines() if re.search(r"\d", line)]


@pytest.fixture(scope="module")
def inputs():
    files = {}
    for name in NAMES:
        found = shipped(MODELS, name)
        assert len(found) == 1, found
        files[name] = found[0]
    analysis = json.loads((MODELS / "plots" / "latent_analysis.json").read_text(encoding="utf-8"))
    # the committed analysis must hold what the cards read from it
    assert {"mi_ksg_bits", "information_bits", "parameters", "latent_dim",
            "classifier_onnx", "vae_supervise_sweep"} <= set(analysis)
    bench_dir = MODELS / "benchmarks"
    return SimpleNamespace(
        files=files, meta={n: load_model(p).info for n, p in files.items()},
        analysis=analysis,
        bench=json.loads((bench_dir / "onnx_vs_torch.json").read_text(encoding="utf-8")),
        equality=json.loads((bench_dir / "onnx_vs_torch_outputs.json").read_text(encoding="utf-8")),
        sweep=json.loads((bench_dir / "vae_supervise_sweep.json").read_text(encoding="utf-8")),
        records=cards.load_records(bench_dir / "card_records.json"))


def render(inputs, name, *, meta=None, analysis=None, records=None, checkpoint=None):
    return MAKERS[name](inputs.files[name], meta or inputs.meta[name], checkpoint,
                        analysis or inputs.analysis, inputs.bench, inputs.equality,
                        records or inputs.records)


def vae_with_logg(inputs, logg_mae):
    meta = copy.deepcopy(inputs.meta["vae"])
    meta["metrics"]["knn_k5_l2"]["logg_mae"] = logg_mae
    return render(inputs, "vae", meta=meta)


# --------------------------------------------------------------------------
# Rendering from what is committed
# --------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_every_placeholder_is_filled(inputs, name):
    text = render(inputs, name)
    assert "$" not in text
    assert text.startswith("# ")


@pytest.mark.parametrize("name", NAMES)
def test_rendered_lines_are_those_of_the_committed_card(inputs, name):
    """The committed cards were written with the checkpoints; every line
    rendered without them that has no gap ("n/a") must be one of theirs."""
    committed = set((MODELS / "cards" / f"{name}.md").read_text(encoding="utf-8").splitlines())
    # the scan ranges are computed from velocity.kind_ranges since the
    # committed velocity card was written (it typed the nominal ranges)
    changed = ("scan (", "quasars (z ")
    stray = [line for line in render(inputs, name).splitlines()
             if "n/a" not in line and not line.startswith(changed) and line not in committed]
    assert stray == []


def test_vae_card_figures(inputs):
    text = render(inputs, "vae")
    knn = inputs.meta["vae"]["metrics"]["knn_k5_l2"]
    assert f"| log g MAE | {knn['logg_mae']:.3f} dex | 0.376 dex | 0.3 dex | met |" in text
    assert f"| median abs(dTeff)/Teff | {100 * knn['teff_median_rel_error']:.2f}% |" in text
    # validation figures of the shipped model: its run in the committed
    # issue-13 experiments record
    assert "abs(dTeff)/Teff 1.83%, log g\n0.240, [Fe/H] 0.186." in text
    assert "the loss adds 3000 x the squared distance" in text
    assert "**32** of 32 dimensions" in text and "for RV z14 (0.36 bits)" in text
    assert "six strided convolutions (8-64 channels, LeakyReLU 0.1)" in text
    assert "(0.52 bits for [Fe/H] in one free dimension)" in text
    assert "(about 7 minutes on 2 cores;" in text and "~0.02 dex in log g" in text
    assert "tolerance 1e-4)." in text
    assert "(ratio 1.98x); spinning:" in text


def test_classifier_card_figures(inputs):
    text = render(inputs, "classifier")
    assert "| accuracy, 246 held-out labelled stars (all 8 stellar classes) | 0.821 | 0.90 " \
           "| **missed** |" in text
    assert "(missed by 0.079).  Of the 44 wrong answers, 33 are" in text
    assert "(a G8 star taught as 0.65 G / 0.35 K: 0.890 against 0.890)" in text
    assert "beside the classes (0.881 against 0.890)" in text
    assert "down to S/N 2 instead of 5 (0.898 against 0.898)" in text
    assert "Recall per class (held-out stars): O 1.00, B 0.78, A 0.72," in text
    assert "(six spectra in both libraries); their figure rests on two test spectra" in text
    assert "118 stars have two spectra" in text and "(10 MaNGA spaxels, NGC 4151)" in text
    assert ("- manga_test_spectra_6 (galaxy) is called qso (p = 0.91, uncertainty 0.48 nats)."
            "  Its S/N is about 2 per pixel, below the S/N 5 floor") in text
    assert "- linetools_ngc4151_sic2a (galaxy): covers 0% of the 3600-7400 A grid" in text
    assert "one of the 246 test spectra is 0.4 points" in text


def test_velocity_card_figures(inputs):
    text = render(inputs, "velocity")
    assert "| robust sigma (1.4826 MAD) of measured - injected | 4.60 km/s | 5 km/s | met |" \
        in text
    assert "140 held-out FGK MILES stars, each shifted\n5 times by a random velocity in " \
           "+-300 km/s, with Gaussian noise at S/N 50" in text
    # what the coarse scan covers: +-4 coarse pixels of 8 x 105.5 km/s for
    # stars, z from -2 to 247 and 33 to 637 coarse pixels for galaxies, QSOs
    assert "covers stars (+-3400 km/s), galaxies (z -0.0056 to 1) and\n" \
           "quasars (z 0.097 to 5)" in text
    assert "(8-pixel bins)" in text and "two Newton steps on 4 sub-pixel" in text
    assert "quarter-pixel shifts" in text
    assert "(up to ~150 km/s, i.e. 5e-4 in z)" in text
    assert "8.0e-05 corresponds to 24 km/s" in text
    assert "off by 10-30 km/s (9 of 700 measurements beyond 20 km/s)" in text


def test_what_only_a_checkpoint_holds_is_n_a(inputs):
    """Training time and the splits table are in no committed file."""
    for name in NAMES:
        text = render(inputs, name)
        assert "Training time on this machine (2 CPU threads): n/a s." in text
    assert "|---|---|\n| n/a | n/a |\n" in render(inputs, "vae")
    assert "k-means clusters of training stars (n/a)" in render(inputs, "velocity")


# --------------------------------------------------------------------------
# Numbers follow their sources
# --------------------------------------------------------------------------

def test_a_changed_metric_changes_the_number_and_the_verdict(inputs):
    target = cards.TARGETS["logg"]
    below = vae_with_logg(inputs, target - 0.0123)
    assert f"| log g MAE | {target - 0.0123:.3f} dex | 0.376 dex | 0.3 dex | met |" in below
    assert "- log g:" not in below
    above = vae_with_logg(inputs, target + 0.0456)
    assert "| log g MAE | 0.346 dex | 0.376 dex | 0.3 dex | **missed** |" in above
    assert "- log g: 0.346 dex against 0.3 (missed by 0.046 dex)." in above
    assert "with ~800 training stars the k=5 neighbours" in above
    assert "often sit 0.5-1 dex away" in above and "at R = 2000 over 3600-7400 A" in above


def test_targets_come_from_targets(inputs, monkeypatch):
    monkeypatch.setitem(cards.TARGETS, "logg", 0.35)
    monkeypatch.setitem(cards.TARGETS, "rv_kms", 4.5)
    text = vae_with_logg(inputs, 0.3456)
    assert "| log g MAE | 0.346 dex | 0.376 dex | 0.35 dex | met |" in text
    velocity = render(inputs, "velocity")
    assert "| 4.60 km/s | 4.5 km/s | **missed** |" in velocity
    assert "- Robust sigma 4.60 km/s against 4.5 km/s." in velocity


def test_classifier_and_velocity_follow_their_metrics(inputs):
    meta = copy.deepcopy(inputs.meta["classifier"])
    meta["metrics"]["test_star_accuracy"] = 0.9312
    text = render(inputs, "classifier", meta=meta)
    assert "| 0.931 | 0.90 | met |" in text and "Held-out star accuracy" not in text
    meta = copy.deepcopy(inputs.meta["velocity"])
    meta["metrics"]["fgk_snr50"].update(robust_sigma_kms=5.2345, outliers_over_20_kms=11)
    text = render(inputs, "velocity", meta=meta)
    assert "| 5.23 km/s | 5 km/s | **missed** |" in text
    assert "(11 of 700 measurements beyond 20 km/s)" in text


def test_records_feed_the_cards(inputs):
    records = copy.deepcopy(inputs.records)
    records["pipeline_minutes"] = 9
    records["classifier_experiments"]["soft_targets"]["validation_accuracy"] = 0.871
    records["known_hard"]["linetools_phl957"]["redshift"] = 2.7
    assert "(about 9 minutes on 2 cores;" in render(inputs, "vae", records=records)
    text = render(inputs, "classifier", records=records)
    assert "0.35 K: 0.871 against 0.890)" in text and "of a z = 2.7 quasar" in text


def test_every_record_says_where_it_comes_from():
    figures = json.loads((MODELS / "benchmarks" / "card_records.json").read_text(encoding="utf-8"))["figures"]
    assert figures
    for name, entry in figures.items():
        assert set(entry) == {"value", "source"}, name
        assert len(entry["source"]) > 40, name


def test_computed_counts_win_over_the_record(inputs):
    analysis = dict(inputs.analysis, catalogue_counts={
        "stars_with_two_spectra": 117, "manga_spaxels": 9, "o_star_spectra": 7,
        "o_star_spectra_test": 3})
    text = render(inputs, "classifier", analysis=analysis)
    assert "117 stars have two spectra" in text and "(9 MaNGA spaxels, NGC 4151)" in text
    assert "(seven spectra in both libraries); their figure rests on three test" in text


def test_catalogue_counts():
    from retrspect.models.report import catalogue_counts

    def item(star_id, collection, label, split="train", kind="star"):
        return SimpleNamespace(star_id=star_id, collection=collection, label=label,
                               split=split, kind=kind)

    items = [item("hd1", "MILES", "O", "test"), item("hd1", "STELIB", "O", "test"),
             item("hd2", "MILES", "O"), item("hd3", "MILES", "G"),
             item("hd3", "STELIB", "G"), item("hd4", "STELIB", "K"),
             item("m1", "MaNGA", "galaxy", "test", "galaxy"),
             item("m2", "MaNGA", "galaxy", "test", "galaxy")]
    assert catalogue_counts(items) == {"stars_with_two_spectra": 2, "manga_spaxels": 2,
                                       "o_star_spectra": 3, "o_star_spectra_test": 2}


def test_the_recorded_counts_are_the_catalogue_s(inputs, items):
    """The record stands in for an analysis written before the counts were;
    it must say what the catalogue says (``items``: tests/models/conftest.py)."""
    from retrspect.models.report import catalogue_counts
    assert catalogue_counts(items) == inputs.records["catalogue_counts"]


def test_a_full_checkpoint_leaves_no_gap(inputs):
    """With the figures only a checkpoint has, nothing is "n/a"."""
    metrics = copy.deepcopy(inputs.meta["velocity"]["metrics"])
    metrics["manga"].update(rotation_equivalent_kms_median=24.1, spaxels=[
        {"obs_id": "manga_test_spectra_6", "z_systemic": 0.01716, "z": 0.01705,
         "dz_over_1pz": -6.2e-4, "snr_per_pixel": 2.0}])
    metrics.update(
        templates={k: {"templates": n} for k, n in (("star", 24), ("galaxy", 8), ("qso", 2))},
        qso_and_agn=[{"obs_id": "linetools_phl957", "z_catalogue": 2.681, "z": 0.085,
                      "grid_coverage": 0.88}],
        fgk_snr10={"robust_sigma_kms": 5.7, "snr_per_native_pixel": 10.0},
        stelib_minus_miles={"n_stars": 28, "median_kms": 2.1, "robust_sigma_kms": 29.9})
    checkpoint = {"metrics": metrics, "extra": {"seconds": 5.2},
                  "config": {"config": {}, "splits": {"test/MILES": 201}}}
    text = render(inputs, "velocity", checkpoint=checkpoint)
    assert "n/a" not in text
    assert "(2 CPU threads): 5 s." in text
    assert "k-means clusters of training stars (24)" in text
    assert "- manga_test_spectra_6: dz/(1+z) = -6.20e-04 at S/N 2.0\nper pixel" not in text
    assert "- manga_test_spectra_6: dz/(1+z) = -6.20e-04 at S/N 2.0 per pixel" in text


def test_write_all(inputs, tmp_path):
    models = {name: SimpleNamespace(info=inputs.meta[name]) for name in NAMES}
    written = cards.write_all(tmp_path / "cards", inputs.files, models, {}, inputs.analysis,
                              inputs.bench, inputs.equality, records=inputs.records)
    assert [p.name for p in written] == ["vae.md", "classifier.md", "velocity.md"]
    assert written[2].read_text(encoding="utf-8") == render(inputs, "velocity")


# --------------------------------------------------------------------------
# The templates hold prose, not figures
# --------------------------------------------------------------------------

@pytest.mark.parametrize("name", (*NAMES, "space"))
def test_templates_hold_no_typed_numbers(name):
    assert typed_numbers((TEMPLATES / f"{name}.md").read_text(encoding="utf-8")) == []


def test_the_number_check_refuses_typed_figures():
    assert typed_numbers("with ~800 training stars") == ["with ~800 training stars"]
    assert typed_numbers("about $minutes minutes\n(2 cores)") == ["(2 cores)"]
    assert typed_numbers("Ca I 4227, [O I] 5577, a G8-G9 star, NGC 4151, L1, 1-D, "
                         "Sedaghat et al.\n(2021), (1+z), sigma^2") == []


# --------------------------------------------------------------------------
# Spaces trained on the archive (retrspect train-space)
# --------------------------------------------------------------------------

def _trained_spaces():
    from retrspect.ingest.infer import read_description
    found = []
    for path in sorted(MODELS.glob("*.onnx")):
        description = read_description(path)
        if description.kind == "space" and "spec" in description.info["metrics"]:
            found.append(path)
    return found


@pytest.mark.parametrize("path", _trained_spaces(), ids=lambda p: p.stem)
def test_a_trained_space_card_is_what_its_file_renders(path):
    """The committed card of a space trained by `retrspect train-space` is
    its template filled from the file's own figures, nothing typed."""
    from retrspect.models.archive_space import card_of
    name = path.stem.rsplit("-", 1)[0]
    committed = (MODELS / "cards" / f"{name}.md").read_text(encoding="utf-8")
    assert card_of(path) == committed
    figures = load_model(path).info["metrics"]
    assert f"{figures['self_retrieval']['first']:.3f}" in committed


def test_there_is_a_trained_space_to_check():
    assert [p.stem.rsplit("-", 1)[0] for p in _trained_spaces()] == ["halpha"]
