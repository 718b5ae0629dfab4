"""Qt-free pieces behind the GUI: verdict rules, ROI slicing, calibration, recipes, view rendering."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from inspector.display import DisplayOptions, render_part
from engine.overlay import operator_overlay, render_overlay
from inspection import (FAIL, PASS, REVIEW, Inspection, Roi, apply_roi, calibrate_thresholds, place_map,
                                  verdict_for)
from inspector.recipes import Recipe, RecipeError, RecipeStore
from inspector.sources import SourceSpec


def test_three_verdicts_from_two_thresholds():
    assert verdict_for(0.10, fail_threshold=0.3, review_threshold=0.2) == PASS
    assert verdict_for(0.20, 0.3, 0.2) == PASS
    assert verdict_for(0.25, 0.3, 0.2) == REVIEW
    assert verdict_for(0.30, 0.3, 0.2) == REVIEW
    assert verdict_for(0.31, 0.3, 0.2) == FAIL
    assert verdict_for(0.25, 0.3, None) == PASS
    assert verdict_for(0.25, 0.3, 0.9) == PASS  # a review threshold above the fail one means no review band
    assert verdict_for(float("nan"), 0.3, 0.2) == "error"


@given(st.floats(0, 2), st.floats(0, 1), st.floats(0, 1))
def test_verdicts_are_monotonic_in_the_score(score, fail, review):
    order = {PASS: 0, REVIEW: 1, FAIL: 2}
    assert order[verdict_for(score, fail, review)] <= order[verdict_for(score + 0.01, fail, review)]


def test_roi_is_plain_slicing_and_maps_go_back_in_place():
    frame = np.arange(100 * 200 * 3, dtype=np.uint32).reshape(100, 200, 3).astype(np.uint8)
    roi = Roi(0.25, 0.1, 0.75, 0.6)
    crop, rect = apply_roi(frame, roi)
    assert rect == (50, 10, 100, 50)
    assert np.shares_memory(crop, frame)
    np.testing.assert_array_equal(crop, frame[10:60, 50:150])
    full = place_map(np.ones((50, 100), np.float32), frame.shape[:2], rect)
    assert full.sum() == 5000 and full[10, 50] == 1 and full[9, 50] == 0
    assert apply_roi(frame, None)[1] == (0, 0, 200, 100)
    assert apply_roi(frame, Roi(0.5, 0.5, 0.51, 0.51))[1] == (0, 0, 200, 100)  # too small: whole frame
    assert Roi(0.9, 0.8, 0.1, 0.2) == Roi(0.1, 0.2, 0.9, 0.8)
    assert Roi.from_list(Roi(0.1, 0.2, 0.3, 0.4).to_list()) == Roi(0.1, 0.2, 0.3, 0.4)


def test_calibration_uses_the_percentile_plus_margin():
    scores = list(np.linspace(0.1, 0.2, 101))
    cal = calibrate_thresholds(scores, percentile=99, margin=0.1, errors=("bad.png: truncated",))
    assert cal.count == 101 and cal.percentile_score == pytest.approx(0.199)
    assert cal.review_threshold == pytest.approx(0.199)
    assert cal.fail_threshold == pytest.approx(0.199 * 1.1)
    assert cal.errors == ("bad.png: truncated",)
    with pytest.raises(ValueError, match="no good image could be scored"):
        calibrate_thresholds([])


def test_recipes_round_trip_list_and_delete(tmp_path):
    store = RecipeStore(tmp_path / "recipes")
    recipe = Recipe("Bottle / line 1", model="/models/bottle", category="bottle", fail_threshold=0.3,
                    review_threshold=0.5, roi=[0.1, 0.1, 0.9, 0.9],
                    source=SourceSpec("camera", "0", width=1280, height=720).to_dict())
    assert recipe.review_threshold == 0.3  # never above the fail threshold
    store.save(recipe)
    store.save(Recipe("Screw", fail_threshold=0.2, review_threshold=0.15))
    assert store.names() == ["Bottle / line 1", "Screw"]
    loaded = store.load("Bottle / line 1")
    assert loaded.source_spec == SourceSpec("camera", "0", width=1280, height=720)
    assert loaded.roi_value == Roi(0.1, 0.1, 0.9, 0.9)
    (tmp_path / "recipes" / "broken.json").write_text("{not json")
    (tmp_path / "recipes" / "other.json").write_text(json.dumps({"format": "something else"}))
    recipes, problems = store.load_all()
    assert len(recipes) == 2 and len(problems) == 2
    store.delete("Screw")
    assert store.names() == ["Bottle / line 1"]
    with pytest.raises(RecipeError, match="no recipe named 'Screw'"):
        store.load("Screw")
    with pytest.raises(RecipeError, match="needs a name"):
        Recipe("  ")


def test_render_part_draws_heatmap_contours_and_roi():
    frame = np.full((60, 80, 3), 100, np.uint8)
    amap = np.zeros((60, 80), np.float32)
    amap[20:40, 30:50] = 0.9
    part = Inspection(source="s", frame_id="f", index=0, verdict=FAIL, score=0.9, fail_threshold=0.5,
                      review_threshold=0.3, view_frame=frame, view_map=amap, view_roi=(5, 5, 70, 50))
    plain = render_part(part, DisplayOptions(overlay=False, contour=False))
    assert not np.array_equal(plain, frame)  # the ROI rectangle is drawn
    np.testing.assert_array_equal(plain[30, 10], frame[30, 10])
    heat = render_part(part, DisplayOptions(overlay=True, contour=True))
    assert not np.array_equal(heat[30, 40], frame[30, 40])
    assert DisplayOptions(opacity=3, colormap="nope", repaint_hz=1000) == DisplayOptions(opacity=1.0,
                                                                                       repaint_hz=120)


def test_heatmap_only_above_the_review_level_unless_the_full_map_is_asked_for():
    frame = np.full((60, 80, 3), 100, np.uint8)
    amap = np.zeros((60, 80), np.float32)
    amap[20:40, 30:50] = 0.9   # above fail (0.5)
    amap[2:12, 2:12] = 0.4     # between review (0.3) and fail
    amap[45:55, 2:12] = 0.2    # below review
    shown = operator_overlay(frame, amap, 0.5, 0.3, outlines=False)
    assert not np.array_equal(shown[30, 40], frame[30, 40]) and not np.array_equal(shown[7, 7], frame[7, 7])
    np.testing.assert_array_equal(shown[45:55, 2:12], frame[45:55, 2:12])   # the part as it is
    np.testing.assert_array_equal(shown[50:, 20:], frame[50:, 20:])
    full = operator_overlay(frame, amap, 0.5, 0.3, full_map=True, outlines=False)
    assert not np.array_equal(full[50, 7], frame[50, 7]) and not np.array_equal(full[58, 78], frame[58, 78])
    np.testing.assert_array_equal(full, render_overlay(frame, amap, threshold=None))  # training.evaluate's call
    np.testing.assert_array_equal(operator_overlay(frame, amap, 0.5, None, outlines=False)[7, 7], frame[7, 7])

    part = Inspection(source="s", frame_id="f", index=0, verdict=FAIL, score=0.9, fail_threshold=0.5,
                      review_threshold=0.3, view_frame=frame, view_map=amap)
    for full_heatmap in (False, True):
        options = DisplayOptions(full_heatmap=full_heatmap)
        np.testing.assert_array_equal(render_part(part, options),
                                      operator_overlay(frame, amap, 0.5, 0.3, full_map=full_heatmap))
    assert DisplayOptions(opacity=float("nan")).opacity == 0.5


@given(st.lists(st.text(min_size=1, max_size=120).filter(str.strip), min_size=1, max_size=6,
                unique_by=lambda n: n.strip()))
def test_recipes_with_any_names_are_kept_apart(tmp_path_factory, names):
    store = RecipeStore(tmp_path_factory.mktemp("recipes"))
    for i, name in enumerate(names):
        store.save(Recipe(name, fail_threshold=0.1 + i / 100))
    assert sorted(store.names()) == sorted(n.strip() for n in names)
    for i, name in enumerate(names):
        assert store.load(name.strip()).fail_threshold == pytest.approx(0.1 + i / 100)
    store.delete(names[0].strip())
    assert names[0].strip() not in store.names() and len(store.names()) == len(names) - 1


def test_recipe_files_from_an_older_version_and_damaged_values(tmp_path):
    store = RecipeStore(tmp_path)
    old = {"format": "deco-inspector-recipe", "version": 1, "name": "Ä line", "fail_threshold": 0.4}
    (tmp_path / "_ line.json").write_text(json.dumps(old), encoding="utf-8")  # how older versions named it
    store.save(Recipe("Ä line", fail_threshold=0.5))
    store.save(Recipe("Ö line", fail_threshold=0.6))
    assert [p.name for p in sorted(tmp_path.glob("*.json"))] == ["_ line.json", "Ö line.json"]
    assert store.load("Ä line").fail_threshold == 0.5
    store.delete("Ä line")
    assert store.names() == ["Ö line"]
    for bad in ({"fail_threshold": float("nan")}, {"review_threshold": "high"}, {"reverse_steps": "abc"},
                {"reverse_steps": 2.5}, {"gate_fusion": "yes"}, {"extra": [1]}, {"roi": "all"}, {"source": [1]},
                {"name": 7, "fail_threshold": None}):
        (tmp_path / "bad.json").write_text(json.dumps({**old, **bad}), encoding="utf-8")
        recipes, problems = store.load_all()
        assert [r.name for r in recipes] == ["Ö line"] and len(problems) == 1 and "bad.json" in problems[0], bad
    (tmp_path / "bad.json").write_text(json.dumps({**old, "name": 7, "reverse_steps": 3.0}), encoding="utf-8")
    assert store.load("7").reverse_steps == 3


def test_fit_within_downscales_only_and_keeps_the_aspect():
    from inspection import fit_within

    frame = np.zeros((480, 640, 3), np.uint8)
    frame[:, 320:] = 200                                  # a sharp edge down the middle
    assert fit_within(frame, 640) is frame                # never upscaled, not copied
    small, preview = fit_within(frame, 480), fit_within(frame, 480, fast=True)
    assert small.shape == preview.shape == (360, 480, 3)
    assert small[:, :230].max() == 0 and small[:, 250:].min() == 200
    assert preview[:, :230].max() == 0 and preview[:, 250:].min() == 200
    maps = fit_within(np.ones((100, 50), np.float32), 20)
    assert maps.shape == (20, 10) and maps.dtype == np.float32 and np.allclose(maps, 1.0)
