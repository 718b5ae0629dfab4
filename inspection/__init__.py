"""The inspection core: Qt-free, between the engine (models) and the drivers (the window, the
`inspect` command, the line station).

An `InspectionSession` takes `Frame`s and an `InspectionRecipe`, runs the model, decides PASS /
REVIEW / FAIL (`verdict_for`, the one rule), writes the results log and archives, and hands frozen
`Inspection` records to its `InspectionListener`s (see `inspection.records` for the contract).
"""

from .records import DEFAULT_VIEW_MAX_SIDE, Frame, Inspection, InspectionListener, InspectionRecipe, SessionSummary
from .regions import Roi, apply_roi, fit_within, make_thumbnail, place_map, view_map
from .session import InspectionSession
from .verdicts import (ERROR, FAIL, PASS, REVIEW, VERDICTS, Calibration, calibrate_thresholds, default_review_threshold,
                       verdict_for)

__all__ = ["DEFAULT_VIEW_MAX_SIDE", "Frame", "Inspection", "InspectionListener", "InspectionRecipe", "SessionSummary",
           "Roi", "apply_roi", "fit_within", "make_thumbnail", "place_map", "view_map", "InspectionSession",
           "PASS", "REVIEW", "FAIL", "ERROR", "VERDICTS", "Calibration", "calibrate_thresholds", "default_review_threshold",
           "verdict_for"]
