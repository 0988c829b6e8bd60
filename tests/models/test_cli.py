"""The training commands (retrspect.models.cli).
"""
from pathlib import Path

import pytest





def test_cli_module_entry_point_refuses_unknown_commands(capsys):
    from retrspect.models import cli
    assert cli.main([]) == 2 and cli.main(["bogus"]) == 2
    assert "usage" in capsys.readouterr().out


def test_benchmark_commands_say_what_is_missing(tmp_path, capsys):
    """`retrspect benchmark models` without checkpoints says to train first;
    a benchmark outside a checkout names the script it looked for."""
    from retrspect.models import cli
    from retrspect.vo_services import cli as retrspect_cli
    shipped = Path(cli.__file__).resolve().parent
    with pytest.raises(RuntimeError, match="run `retrspect train` first"):
        cli.benchmark(["--workdir", str(tmp_path), "--models-dir", str(shipped)])
    assert retrspect_cli.main(["benchmark", "--repo", str(tmp_path), "knn"]) == 1
    assert str(tmp_path / "tests" / "benchmarks" / "bench_knn.py") in capsys.readouterr().err


def test_model_commands_write_to_the_checkout_never_the_installed_package(
        tmp_path, monkeypatch, capsys, checkout):
    """export, analyse and benchmark default to models/ of the checkout they
    run in; outside a checkout they refuse rather than write into the
    installed package that ingest and the server load."""
    from retrspect.models import cli
    repo = checkout
    assert cli.checkout_models_dir(repo / "tests") == repo / "models"
    assert cli.checkout_models_dir(tmp_path) is None
    monkeypatch.chdir(tmp_path)
    for command, option in ((cli.export, "--out"), (cli.analyse, "--models-dir"),
                            (cli.benchmark, "--models-dir")):
        with pytest.raises(SystemExit) as stop:
            command(["--workdir", str(tmp_path)])
        assert stop.value.code == 2
        assert f"not inside a retrspect checkout: give {option}" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_export_without_checkpoints_writes_nothing(tmp_path, capsys):
    from retrspect.models import cli
    out = tmp_path / "models"
    out.mkdir()
    assert cli.export(["--workdir", str(tmp_path / "empty"), "--out", str(out)]) == 1
    assert "run `retrspect train` first" in capsys.readouterr().out
    assert list(out.iterdir()) == []


def test_supervision_sweep_rule_keeps_search_by_example():
    """The lowest log g wins only among weights whose self-retrieval stays
    near the best: 30 has the best gravity but loses search by example."""
    from retrspect.models.cli import choose_supervision

    def row(weight, logg, first2, first5):
        return {"weight": weight, "val": {"logg_mae": logg, "self_retrieval_noise_0.02": first2,
                                          "self_retrieval_noise_0.05": first5}}
    rows = [row(0, 0.33, 0.92, 0.70), row(3, 0.26, 0.95, 0.76), row(10, 0.25, 0.94, 0.75),
            row(30, 0.24, 0.87, 0.60)]
    assert choose_supervision(rows, slack=0.02) == 10
    assert choose_supervision(rows, slack=0.005) == 3
    assert choose_supervision(rows, slack=1.0) == 30


def test_learning_curve_subsets_nest_and_touch_only_training_stars(items):
    """A smaller fraction keeps a subset of a larger one's training stars,
    keeps a star's spectra together, and leaves test and validation alone."""
    from retrspect.models.cli import training_subset

    def kept(subset):
        return {i.obs_id for i in subset if i.split == "train"}

    quarter, half = training_subset(items, 0.25), training_subset(items, 0.5)
    all_train = kept(items)
    assert kept(quarter) < kept(half) < all_train
    assert 0.15 < len(kept(quarter)) / len(all_train) < 0.35
    stars = {}
    for i in half:
        if i.kind == "star" and i.star_id:
            stars.setdefault(i.star_id, set()).add(i.split)
    assert all(len(s) == 1 for s in stars.values())
    assert [i.split for i in half if i.split in ("val", "test")] == \
        [i.split for i in items if i.split in ("val", "test")]


def test_catalogue_agreement_measures_the_two_catalogues(items):
    from retrspect.models.cli import catalogue_agreement
    got = catalogue_agreement(items)
    assert got["n_stars"] > 100 and got["teff_rel_n"] > 100
    # the catalogues agree closely but not exactly (they are not one table)
    assert 0.001 < got["teff_rel_difference_sigma"] < 0.05
    assert 0.02 < got["logg_dex_difference_sigma"] < 0.5


def test_experiment_rule_keeps_the_floors_then_lifts_the_weaker_direction():
    from retrspect.models.cli import choose_experiment

    def run(self_first, cut3, ms, sm):
        return {"self_retrieval_val": {"noise_0.02": {"first": self_first}},
                "cutouts_val": {"coverage_0.8": {"hit@3": cut3}},
                "cross_library_val": {"MILES->STELIB": {"hit@1": ms, "hit@10": 0.9},
                                      "STELIB->MILES": {"hit@1": sm, "hit@10": 0.9}}}

    runs = {"best_cross_but_forgets": run(0.90, 0.9, 0.9, 0.9),
            "no_cutouts": run(0.97, 0.5, 0.8, 0.8),
            "lopsided": run(0.96, 0.85, 0.9, 0.2),
            "balanced": run(0.95, 0.80, 0.5, 0.4)}
    assert choose_experiment(runs) == "balanced"
    del runs["balanced"]
    assert choose_experiment(runs) == "lopsided"
    # nothing keeps identity: the aligned run that forgets least
    aligned = {"a": run(0.86, 0.9, 0.7, 0.3), "b": run(0.88, 0.9, 0.5, 0.3),
               "no_cutouts": run(0.93, 0.5, 0.7, 0.3)}
    assert choose_experiment(aligned) == "b"
    assert choose_experiment({"x": run(0.5, 0.5, 1, 1)}) is None
