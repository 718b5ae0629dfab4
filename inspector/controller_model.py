"""The controller's model concern: the model picker, loading (through the engine worker), the model's
facts and run-time settings, and the judgement settings (thresholds, category, region of interest,
calibration from good images). A part of InspectorController (see inspector/controller.py)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from PySide6.QtWidgets import QFileDialog

from engine.defaults import DEFAULT_THRESHOLD
from inspection import Calibration, Roi

from .controls import AUTO_CATEGORY, AUTO_MIN_SCORE
from .dialogs import CalibrationDialog
from .imageio import list_images
from .main_window import LIVE_TAB
from .paths import DEMO_MODEL_DIR
from .setting_values import finite_float, saved_setting

RECENT_MODELS = 8


def model_summary(info: dict) -> str:
    """Rich text for the model box: id, size, parameters, disk size, classes, device."""
    params = info.get("unet_parameters") or 0
    disk = info.get("disk_bytes") or 0
    classes = info.get("classes") or []
    kind = f" ({info['detector']})" if info.get("detector") else ""
    parts = [f"<b>{info.get('model_id') or Path(info.get('path', '')).name}</b>{kind}",
             f"{info.get('size') or 'custom UNet'} · {params / 1e6:.1f} M parameters"
             + (f" · {disk / 1e6:.0f} MB on disk" if disk else ""),
             f"{len(classes)} categor{'y' if len(classes) == 1 else 'ies'}"
             + (" · classifier" if info.get("classifier") else "")
             + (" · gated" if info.get("gating") else ""),
             f"Runs on {info.get('device', '?')}"]
    return "<br>".join(parts)


def automatic_category(info: dict) -> tuple[bool, str]:
    """(whether the model can choose the category itself, the label of that choice): a category
    classifier, DiAD's lowest-score choice over its classes, or a one-class model."""
    if info.get("classifier"):
        return True, AUTO_CATEGORY
    if info.get("category_selection") == "min-score":
        return True, AUTO_MIN_SCORE
    return len(info.get("classes") or []) <= 1, AUTO_CATEGORY


class ModelControl:
    """The model and the judgement settings: a part of InspectorController."""

    # ----------------------------------------------------------------- model
    def refresh_models(self) -> None:
        """Refill the model picker (recent models, the app's model folder, the demo)."""
        entries: list[tuple[str, str]] = []
        seen: set[str] = set()

        def add(label: str, path: str) -> None:
            if path and path not in seen:
                seen.add(path)
                entries.append((label, path))

        if DEMO_MODEL_DIR.is_dir():
            add("Demo model", str(DEMO_MODEL_DIR))
        registered = self.data_dir / "models"
        if registered.is_dir():
            for folder in sorted(p for p in registered.iterdir() if (p / "model.json").is_file()):
                add(folder.name, str(folder))
        for path in self._recent_models():
            if Path(path).exists():
                add(f"{Path(path).name} ({'checkpoint' if Path(path).is_file() else 'folder'})", path)
        if self.model_path:
            add(Path(self.model_path).name, self.model_path)
        self.window.controls.show_models(entries, self.model_path)

    def _recent_models(self) -> list[str]:
        value = self.settings.value("model/recent", [])
        if isinstance(value, str):
            value = [value]
        return [str(v) for v in (value or [])]

    def open_model(self, path: str, overrides: dict | None = None) -> None:
        """Load a model folder or reference checkpoint in the worker (the UI shows a busy sign)."""
        self.model_loading = True
        self.request_load.emit(str(path), dict(overrides or {}))

    def choose_model_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self.window, "Open model folder",
                                                  str(Path(self.model_path).parent) if self.model_path else "")
        if folder:
            self.open_model(folder)

    def choose_checkpoint(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self.window, "Open reference checkpoint", "",
                                              "Checkpoints (*.pt *.pth *.ckpt);;All files (*)")
        if path:
            self.open_model(path)

    def _on_model_loading(self, path: str) -> None:
        self.message(f"Loading model {path}…")
        self.window.controls.show_model_info(f"Loading {Path(path).name}…")

    def _on_model_failed(self, text: str) -> None:
        self.model_loading = False
        self._pending_recipe = None
        self._start_after_load = False
        self.message(text, "error")
        if self.model_info is not None:
            self.window.controls.show_model_info(model_summary(self.model_info))
        else:
            self.window.controls.show_model_info("No model loaded: open a model folder or checkpoint")

    def _on_model_loaded(self, info: dict) -> None:
        self.model_loading = False
        previous = self.model_path
        self._adopt_model_info(info)
        self.model_path = info["path"]
        self.window.show_device(info.get('device', '?'))
        self._show_model_info(info)
        recent = [self.model_path] + [p for p in self._recent_models() if p != self.model_path]
        self.settings.setValue("model/recent", recent[:RECENT_MODELS])
        self.settings.setValue("model/path", self.model_path)
        self.refresh_models()
        classes = list(info.get("classes") or [])
        auto, auto_label = automatic_category(info)
        recipe = self._pending_recipe
        self._pending_recipe = None
        if recipe is not None:
            self._apply_recipe_settings(recipe)
        else:
            if previous != self.model_path:
                self._restore_thresholds(info)
            category = self.context.category if self.context.category in classes else None
            if category is None and not auto and classes:
                category = classes[0]
                self.message(f"This model has no category classifier: inspecting as '{category}' "
                             f"(change it under Inspection ▸ Category)", "warning")
            self.context = replace(self.context, category=category)
            self.window.controls.show_categories(classes, category, auto, auto_label)
            self._push_context()
        self.message(f"Model {info.get('model_id') or Path(self.model_path).name} ready "
                     f"({info.get('size') or 'custom UNet'}, {len(classes)} categories, {info.get('device', '?')})",
                     "ok")
        self.model_ready.emit(info)
        if self._start_after_load:
            self._start_after_load = False
            self.start()

    def _show_model_info(self, info: dict) -> None:
        self.window.controls.show_model_info(model_summary(info), info.get("reverse_steps"), info.get("gate_fusion"),
                                             bool(info.get("gating", True)))
        self.window.show_gate_fusion(bool(info.get("gate_fusion")), bool(info.get("gating", True)))

    def _restore_thresholds(self, info: dict) -> None:
        s = self.settings
        saved = saved_setting(s, "thresholds/fail", None, finite_float)
        if str(s.value("thresholds/model", "") or "") == self.model_path and saved is not None:
            fail, review = saved, saved_setting(s, "thresholds/review", 0.0, finite_float)
        else:
            fail = float(info.get("threshold", DEFAULT_THRESHOLD))
            review = round(0.8 * fail, 4)
        self.set_thresholds(fail, review, mark_modified=False)

    def _adopt_model_info(self, info: dict) -> None:
        """Keep the worker's model description; a live queue holds one newest frame per engine lane."""
        self.model_info = info
        self.frames.keep = max(1, int(info.get("lanes", 1)))

    def _on_settings_applied(self, info: dict) -> None:
        self._adopt_model_info(info)
        self._show_model_info(info)

    def set_model_settings(self, **changes) -> None:
        self.request_settings.emit(changes)
        self._mark_recipe_modified()

    def set_gate_fusion(self, on: bool) -> None:
        if self.model_info is not None and bool(self.model_info.get("gate_fusion")) == on:
            return
        self.set_model_settings(gate_fusion=bool(on))

    # ----------------------------------------------------------------- judgement settings
    def _push_context(self) -> None:
        self.request_configure.emit(self.context)
        self.window.trend.set_thresholds(self.context.fail_threshold, self.context.review_threshold)
        self._part_dirty = True

    def set_thresholds(self, fail: float, review: float | None = None, mark_modified: bool = True) -> None:
        fail = max(0.0, float(fail))
        review = fail if review is None else min(max(0.0, float(review)), fail)
        self.context = replace(self.context, fail_threshold=fail, review_threshold=review)
        self.window.controls.show_thresholds(fail, review)
        self._push_context()
        if mark_modified:
            self._mark_recipe_modified()
        s = self.settings
        s.setValue("thresholds/model", self.model_path)
        s.setValue("thresholds/fail", fail)
        s.setValue("thresholds/review", review)

    def set_category(self, category: str | None) -> None:
        self.context = replace(self.context, category=category)
        self._push_context()
        self._mark_recipe_modified()
        self.message(f"Category: {category or 'chosen by the classifier for each part'}")

    def set_roi(self, roi: Roi | None) -> None:
        self.context = replace(self.context, roi=roi)
        self._push_context()
        self._mark_recipe_modified()
        self._show_roi()
        self.message("Region of interest cleared: the whole frame is inspected" if roi is None
                     else f"Region of interest set: {roi.describe()}")

    def _show_roi(self) -> None:
        roi = self.context.roi
        self.window.controls.show_roi("Whole frame" if roi is None else roi.describe())

    def start_roi_drawing(self, on: bool) -> None:
        view = self.window.live_view
        if not on:
            view.cancel_roi_selection()
            self._show_roi()
            return
        if not view.has_image():
            self.message("Open a source first: the region of interest is drawn on the image", "warning")
            self._show_roi()
            return
        self.window.show_tab(LIVE_TAB)
        view.start_roi_selection()
        self.window.show_status("Drag a rectangle on the inspected image to set the region of interest")

    def choose_calibration(self) -> None:
        dialog = CalibrationDialog(str(self.settings.value("calibration/folder", "") or ""), self.window)
        if dialog.exec():
            folder, percentile, margin = dialog.values()
            self.settings.setValue("calibration/folder", folder)
            self.calibrate_folder(folder, percentile, margin)

    def calibrate_folder(self, folder: str, percentile: float = 99.0, margin: float = 0.1) -> None:
        if not folder or not Path(folder).is_dir():
            self.message(f"Calibration: {folder or '(no folder)'} is not a folder", "error")
            return
        paths = [str(p) for p in list_images(folder, recursive=True)]
        if not paths:
            self.message(f"Calibration: no images in {folder}", "error")
            return
        self.calibrate(paths, percentile, margin)

    def calibrate(self, paths: list[str], percentile: float = 99.0, margin: float = 0.1) -> None:
        self.message(f"Calibrating on {len(paths)} good images…")
        self.request_calibration.emit(list(paths), float(percentile), float(margin))

    def _on_calibrated(self, cal: Calibration) -> None:
        self.set_thresholds(cal.fail_threshold, cal.review_threshold)
        skipped = f"; {len(cal.errors)} unreadable images skipped" if cal.errors else ""
        self.message(f"Calibrated on {cal.count} good images: {cal.percentile:g}th percentile score "
                     f"{cal.percentile_score:.4f} (max {cal.max_score:.4f}) -> review above "
                     f"{cal.review_threshold:.4f}, fail above {cal.fail_threshold:.4f}{skipped}", "ok")
        for error in cal.errors[:5]:
            self.message(error, "warning")
