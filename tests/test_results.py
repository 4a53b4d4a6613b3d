"""The regression guard of ``make results`` (scripts/results.py): its comparison rule, and docs/results.json in
step with the docs it guards."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("results_script", ROOT / "scripts" / "results.py")
assert spec and spec.loader
results = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = results  # dataclasses look their module up there
spec.loader.exec_module(results)
FIGURES = json.loads((ROOT / "docs" / "results.json").read_text())["figures"]


@pytest.mark.parametrize("fig", FIGURES, ids=[f["id"] for f in FIGURES])
def test_each_guarded_figure_is_the_one_its_doc_states(fig: dict) -> None:
    text = (ROOT / fig["doc"]).read_text()
    assert f"{fig['mean']:.3f} ± {fig['se']:.3f}" in text, f"{fig['doc']} no longer states {fig['id']}"
    assert fig["id"].split("/")[0] in results.SUITES and fig["seeds"] and fig["n"] > 0


def test_every_suite_guards_something_and_ids_are_unique() -> None:
    assert {f["id"].split("/")[0] for f in FIGURES} == set(results.SUITES)
    assert len({f["id"] for f in FIGURES}) == len(FIGURES)


def test_runs_cover_each_figure_seed_once() -> None:
    figs = [{"id": "avclips/avclips-gated/all", "seeds": [0, 1, 2]},
            {"id": "avclips/avclips-gated/missing:audio", "seeds": [0, 1, 2]},
            {"id": "avclips/avclips-audio/all", "seeds": [0, 1, 2]},
            {"id": "aligner/demo/photos/zeroshot_label/top1", "seeds": [0]}]
    runs = results._runs(figs, {"avclips"})
    assert [(r.name, r.seed) for r in runs] == [("avclips-audio", 0), ("avclips-audio", 1), ("avclips-audio", 2),
                                                ("avclips-gated", 0), ("avclips-gated", 1), ("avclips-gated", 2)]


def test_summarise_uses_seed_spread_or_one_runs_sampling_error() -> None:
    mean, se = results.summarise([0.5, 0.6, 0.7])
    assert mean == pytest.approx(0.6) and se == pytest.approx(0.1 / math.sqrt(3))
    assert results.summarise([0.4], [0.03]) == (0.4, 0.03)
    assert results.summarise([0.4]) == (0.4, 0.0)


def test_compare_passes_inside_two_standard_errors_and_flags_outside() -> None:
    ref = {"id": "s/m/acc", "mean": 0.50, "se": 0.01, "seeds": [0, 1, 2]}
    allowed = 2 * math.sqrt(0.01**2 + 0.01**2) + results.ROUNDING
    near, far = 0.50 + 0.9 * allowed, 0.50 + 1.1 * allowed
    rows = results.compare([ref], {"s/m/acc": (near, 0.01)})
    assert rows[0]["ok"] and rows[0]["tolerance"] == pytest.approx(allowed)
    assert not results.compare([ref], {"s/m/acc": (far, 0.01)})[0]["ok"]
    assert not results.compare([ref], {"s/m/acc": (0.50 - 1.1 * allowed, 0.01)})[0]["ok"]  # down as well as up
    assert results.compare([ref], {}) == []  # figures of suites not run are not reported


def test_perfect_score_tolerates_one_error_but_not_a_real_drop() -> None:
    ref = {"id": "s/m/all", "mean": 1.0, "se": 0.0, "seeds": [0, 1, 2], "n": 600}
    one_error = results.summarise([1.0, 1.0, 599 / 600])
    ten_errors = results.summarise([590 / 600] * 3)  # on every seed
    assert results.compare([ref], {"s/m/all": one_error})[0]["ok"]
    assert not results.compare([ref], {"s/m/all": ten_errors})[0]["ok"]
