"""The real training material: labels, star identities and splits (retrspect.models.catalogue).
"""

import numpy as np
import pytest

from retrspect.models import catalogue


def test_splits_are_by_star_and_never_straddle(items):
    splits = {}
    for item in items:
        splits.setdefault(item.star_id, set()).add(item.split)
    assert all(len(s) == 1 for s in splits.values())
    # the MILES/STELIB duplicates exist and were merged under one identity
    both = [k for k in splits if {i.collection for i in items if i.star_id == k}
            >= {"MILES", "STELIB"}]
    assert len(both) >= 75
    assert all(i.split == "test" for i in items if i.kind in ("galaxy", "qso"))


def test_star_identity_normalises_names():
    assert catalogue.star_identity("HD002857", "x") == catalogue.star_identity("HD 2857", "y") == "HD2857"
    assert catalogue.star_identity("BD+012916", "x") == "BD+12916"
    assert catalogue.star_identity(None, "miles_m0001") == "miles_m0001"


def test_main_class_and_emission_labels(items):
    assert catalogue.main_class("sdF5") == "F" and catalogue.main_class("K4III") == "K"
    assert catalogue.main_class("WN") is None and catalogue.main_class("DA:") is None
    by_name = {i.spectrum.meta["target_name"]: i for i in items
               if i.collection == "STELIB"}
    # HD 33133 is a WN star with strong H-alpha / He II emission
    assert by_name["HD033133"].label == "emission_line_star"


def test_ordinal_target_follows_the_subclass(items):
    item = next(i for i in items if i.label == "G")
    item = catalogue.Item(spectrum=item.spectrum, kind="star", star_id="x", label="G")
    g, k, f = (catalogue.CLASSES.index(c) for c in "GKF")
    for mk, want in (("G8III", {g: 0.65, k: 0.35}), ("G5V", {g: 0.95, k: 0.05}),
                     ("G", {g: 1.0})):
        item.spectrum.meta["mk_type"] = mk
        target = catalogue.ordinal_target(item)
        expected = np.zeros(len(catalogue.CLASSES))
        for n, v in want.items():
            expected[n] = v
        assert np.allclose(target, expected, atol=1e-6), mk
    item.spectrum.meta["mk_type"] = "G0V"
    assert catalogue.ordinal_target(item)[f] == pytest.approx(0.45)


def test_label_consistency_rule():
    def star(label, teff):
        return catalogue.Item(spectrum=None, kind="star", star_id="x", label=label, teff=teff)
    assert catalogue.teff_class(5800) == "G" and catalogue.teff_class(40000) == "O" and catalogue.teff_class(3000) == "M"
    assert not catalogue.label_consistent(star("B", 6200))        # 'B5' at 6200 K: F by Teff
    assert catalogue.label_consistent(star("G", 4850))            # G8 giant at 4850 K: K, one off
    assert catalogue.label_consistent(star("K", None))
    assert catalogue.label_consistent(star("emission_line_star", 30000))
