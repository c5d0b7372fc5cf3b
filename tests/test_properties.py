"""Property-based tests (hypothesis): eps parsing, the tidy table's schema, registry names."""

from __future__ import annotations

import math
import re
from fractions import Fraction

import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from robustbench_wbc.attacks.base import SENSIBLE_EPS, EpsError, eps_label, parse_eps
from robustbench_wbc.bench.cells import Cell
from robustbench_wbc.bench.runner import COLUMNS, Context, _rows
from robustbench_wbc.bench.store import ResultStore
from robustbench_wbc.models.card import ModelCard
from robustbench_wbc.registry import Registry, UnknownNameError
from robustbench_wbc.stats import Measure

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# --- eps ----------------------------------------------------------------------------------------
fractions = st.tuples(st.integers(0, 64), st.integers(1, 10_000))


@SETTINGS
@given(st.lists(fractions, min_size=1, max_size=5), st.sampled_from(["linf", "l2"]))
def test_fractions_parse_to_their_value_or_are_refused_as_too_large(parts, norm):
    text = ",".join(f"{a}/{b}" for a, b in parts)
    values = [a / b for a, b in parts]
    if all(v <= SENSIBLE_EPS[norm] for v in values):
        assert parse_eps(text, norm) == pytest.approx(values, rel=1e-12)
    else:
        with pytest.raises(EpsError, match="--force"):
            parse_eps(text, norm)
    assert parse_eps(text, norm, force=True) == pytest.approx(values, rel=1e-12)


@SETTINGS
@given(st.floats(0, 16, allow_nan=False), st.sampled_from(["linf", "l2"]))
def test_decimals_round_trip(v, norm):
    text = repr(v)
    if "e" in text:  # 1e-05: not a form the CLI documents
        return
    assert parse_eps(text, norm, force=True) == [pytest.approx(float(Fraction(text)))]


@SETTINGS
@given(st.text(max_size=20))
def test_any_text_parses_or_raises_eps_error(text):
    try:
        values = parse_eps(text, "linf", force=True)
    except EpsError as exc:
        assert str(exc)  # a message, never an empty error
        return
    assert values and all(math.isfinite(v) and v >= 0 for v in values)


@SETTINGS
@given(st.floats(0.001, 100, allow_nan=False))
def test_negative_eps_is_refused(v):
    with pytest.raises(EpsError, match="≥ 0"):
        parse_eps(f"-{v}", "l2", force=True)


@SETTINGS
@given(st.integers(0, 255))
def test_whole_grey_levels_label_as_fractions_of_255(k):
    assert eps_label(k / 255, "linf") == f"{k}/255"
    assert parse_eps(eps_label(k / 255, "linf"), "linf", force=True) == [pytest.approx(k / 255)]


# --- the tidy table -----------------------------------------------------------------------------
NUMERIC = ["model_seed", "severity", "eps", "seed", "value", "n", "ci_low", "ci_high", "time_s", "forward_passes",
           "backward_passes", "labelled_images", "masked_images", "model_params"]
metric_names = st.from_regex(r"[a-z][a-z_]{0,20}", fullmatch=True)
values = st.floats(allow_nan=True, allow_infinity=False, width=64)
measures = st.builds(Measure, values, st.integers(0, 10_000), values, values)


@pytest.fixture(scope="module")
def card(tiny_cards) -> ModelCard:
    return tiny_cards["tiny_cls"]


@SETTINGS
@given(metrics=st.dictionaries(metric_names, measures, max_size=6), eps=st.floats(0, 1), seed=st.integers(0, 2**31 - 1))
def test_rows_are_tidy_whatever_the_metrics(card, metrics, eps, seed):
    cell = Cell("tiny_cls", "synth:test", "pgd", eps, "cls", seed, 16, card.weights_sha256, "linf", "wbc", {"steps": 3})
    rows = _rows(cell, card, Context(), metrics, "ok", "", 0.5)
    assert list(rows.columns) == COLUMNS
    assert len(rows) == max(len(metrics), 1) and rows["metric"].is_unique
    for col in NUMERIC:  # numbers are numbers, never strings
        assert pd.api.types.is_numeric_dtype(rows[col]), col
    for col in ("model", "split", "attack", "target", "norm", "metric", "status", "params"):
        assert rows[col].map(type).eq(str).all(), col
    assert set(rows["cell_id"]) == {cell.id} and (rows["eps"] == float(eps)).all()
    assert rows["split"].iloc[0] == "synth:test" and rows["params"].iloc[0] == "steps=3"  # one dimension per column


@SETTINGS
@given(metrics=st.dictionaries(metric_names, measures, min_size=1, max_size=4))
def test_the_store_round_trips_rows(card, metrics, tmp_path_factory):
    store = ResultStore(tmp_path_factory.mktemp("store"))
    cell = Cell("tiny_cls", "synth:test", "fgsm", 2 / 255, "cls", 0, 16, card.weights_sha256)
    rows = _rows(cell, card, Context(), metrics, "ok", "", 0.1)
    store.put(cell.id, rows)
    back = store.table()
    assert store.is_done(cell.id)
    pd.testing.assert_frame_equal(back.sort_values("metric").reset_index(drop=True)[COLUMNS],
                                  rows.sort_values("metric").reset_index(drop=True), check_dtype=False)


# --- registry names -----------------------------------------------------------------------------
ids = st.from_regex(r"[a-z][a-z0-9_\-.]{0,15}", fullmatch=True)


@SETTINGS
@given(st.sets(ids, min_size=1, max_size=8), st.text(max_size=20))
def test_any_name_is_found_or_refused_with_suggestions(names, query):
    reg: Registry[int] = Registry("thing", list_command="things list")
    for i, n in enumerate(sorted(names)):
        reg.add(n, i)
    try:
        reg.get(query)
    except UnknownNameError as exc:
        assert query not in names and query.lower() not in names
        assert repr(query) in str(exc) and "things list" in str(exc)
        assert set(exc.suggestions) <= names  # suggestions are real names
        return
    assert query in names or query.lower() in names


@SETTINGS
@given(st.sets(ids, min_size=1, max_size=8))
def test_resolve_gives_each_name_once_in_the_order_given(names):
    reg: Registry[int] = Registry("thing")
    for i, n in enumerate(sorted(names)):
        reg.add(n, i)
    order = sorted(names, reverse=True)
    assert reg.resolve(",".join(order + order)) == order
    assert reg.resolve("all") == reg.list() and set(reg.list()) == names


@SETTINGS
@given(st.text(min_size=1, max_size=12))
@example("pgd\n")  # `$` in a regex matches before a trailing newline: found by this test
@example("PGD")
def test_ids_are_lower_case_words_and_nothing_else(name):
    reg: Registry[int] = Registry("thing")
    valid = re.fullmatch(r"[a-z0-9][a-z0-9_.:@\-]*", name) is not None  # not even a trailing newline
    if valid:
        reg.add(name, 1)
        assert name in reg
    else:
        with pytest.raises(ValueError, match="Invalid thing id"):
            reg.add(name, 1)
