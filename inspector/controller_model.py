"""The controller's model concern: the model picker, loading (through the engine worker), the model's
facts and run-time settings, and the judgement settings (thresholds, category, region of interest,
calibration from good images). A part of InspectorController (see inspector/controller.py)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from PySide6.QtWidgets import QFileDialog

from inspection import Calibration, Roi, default_review_threshold

from .dialogs import CalibrationDialog
from .imageio import list_images
from .loaded_model import LoadedModel, automatic_category, model_summary
from .paths import DEMO_MODEL_DIR
from .setting_values import finite_float, saved_setting

RECENT_MODELS = 8


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
        self.window.show_models(entries, self.model_path)

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
        self.window.show_model_info(f"Loading {Path(path).name}…")

    def _on_model_failed(self, text: str) -> None:
        self.model_loading = False
        self._pending_recipe = None
        self._start_after_load = False
        self.message(text, "error")
        if self.model_info is not None:
            self.window.show_model_info(model_summary(self.model_info))
        else:
            self.window.show_model_info("No model loaded: open a model folder or checkpoint")

    def _on_model_loaded(self, model: LoadedModel) -> None:
        self.model_loading = False
        previous = self.model_path
        if previous != model.path:
            self.audit("model", "", previous, f"{model.path} ({model.name})")
        self._adopt_model_info(model)
        self.model_path = model.path
        self.window.show_device(model.info.device)
        self._show_model_info(model)
        recent = [self.model_path] + [p for p in self._recent_models() if p != self.model_path]
        self.settings.setValue("model/recent", recent[:RECENT_MODELS])
        self.settings.setValue("model/path", self.model_path)
        self.refresh_models()
        classes = list(model.info.classes)
        auto, auto_label = automatic_category(model.info)
        recipe = self._pending_recipe
        self._pending_recipe = None
        if recipe is not None:
            self._apply_recipe_settings(recipe)
        else:
            if previous != self.model_path:
                self._restore_thresholds(model)
            category = self.context.category if self.context.category in classes else None
            if category is None and not auto and classes:
                category = classes[0]
                self.message(f"This model has no category classifier: inspecting as '{category}' "
                             f"(change it under Inspection ▸ Category)", "warning")
            self.context = replace(self.context, category=category)
            self.window.show_categories(classes, category, auto, auto_label)
            self._push_context()
        if model.runtime_reason:
            self.message(f"Runtime {model.runtime}: {model.runtime_reason}", "info")
        self.message(f"Model {model.name} ready ({model.size_name}, {len(classes)} categories, {model.info.device}, "
                     f"{model.runtime})", "ok")
        self.model_ready.emit(model)
        if self._start_after_load:
            self._start_after_load = False
            self.start()

    def _show_model_info(self, model: LoadedModel) -> None:
        self.window.show_model_info(model_summary(model), model.reverse_steps, model.gate_fusion, model.info.gating)
        self.window.show_runtimes([(o.label, o.name) for o in model.runtime_options], model.runtime)
        self.window.show_gate_fusion(model.gate_fusion, model.info.gating)

    def _restore_thresholds(self, model: LoadedModel) -> None:
        s = self.settings
        saved = saved_setting(s, "thresholds/fail", None, finite_float)
        if str(s.value("thresholds/model", "") or "") == self.model_path and saved is not None:
            fail, review = saved, saved_setting(s, "thresholds/review", 0.0, finite_float)
        else:
            fail = float(model.threshold)
            review = default_review_threshold(fail)
        self.set_thresholds(fail, review, mark_modified=False)

    def _adopt_model_info(self, model: LoadedModel) -> None:
        """Keep the worker's model description; a live queue holds one newest frame per engine lane."""
        self.model_info = model
        self.frames.keep = max(1, model.lanes)

    def _on_settings_applied(self, model: LoadedModel) -> None:
        self._adopt_model_info(model)
        self._show_model_info(model)

    def set_model_settings(self, **changes) -> None:
        if not self.permit("model_settings"):
            if self.model_info is not None:
                self._show_model_info(self.model_info)
            return
        self.audit("model_setting", ", ".join(sorted(changes)),
                   {k: getattr(self.model_info, k, None) for k in sorted(changes)}, changes)
        self.request_settings.emit(changes)
        self._mark_recipe_modified()

    def set_runtime(self, name: str) -> None:
        """Run the model on `name` ('openvino int8', 'torch fp32', ...): the engine switches (an
        OpenVINO network is built or read from the cache; unavailable: a notice, then torch)."""
        if self.model_info is None or self.model_info.runtime == name:
            return
        runtime, _, precision = name.partition(" ")
        self.set_model_settings(runtime=runtime, precision=precision)

    def set_gate_fusion(self, on: bool) -> None:
        if self.model_info is not None and self.model_info.gate_fusion == on:
            return
        self.set_model_settings(gate_fusion=bool(on))

    # ----------------------------------------------------------------- judgement settings
    def _push_context(self) -> None:
        self.request_configure.emit(self.context)
        self.window.show_thresholds(self.context.fail_threshold, self.context.review_threshold)
        self._part_dirty = True

    def set_thresholds(self, fail: float, review: float | None = None, mark_modified: bool = True) -> None:
        """mark_modified: a person changes them (the engineer role; audited), not a recipe or a model."""
        if mark_modified and not self.permit("thresholds"):
            self._push_context()   # the controls show the thresholds in force again
            return
        fail = max(0.0, float(fail))
        review = fail if review is None else min(max(0.0, float(review)), fail)
        old = self.context
        self.context = replace(self.context, fail_threshold=fail, review_threshold=review)
        self._push_context()
        if mark_modified:
            for target, before, after in (("fail", old.fail_threshold, fail), ("review", old.review_threshold, review)):
                if before != after:
                    self.audit("threshold", target, before, after)
            self._mark_recipe_modified()
        s = self.settings
        s.setValue("thresholds/model", self.model_path)
        s.setValue("thresholds/fail", fail)
        s.setValue("thresholds/review", review)

    def set_category(self, category: str | None) -> None:
        if not self.permit("category"):
            return
        self.audit("category", "", self.context.category or "automatic", category or "automatic")
        self.context = replace(self.context, category=category)
        self._push_context()
        self._mark_recipe_modified()
        self.message(f"Category: {category or 'chosen by the classifier for each part'}")

    def set_roi(self, roi: Roi | None) -> None:
        if not self.permit("roi"):
            self._show_roi()
            return
        describe = lambda r: "whole frame" if r is None else r.describe()  # noqa: E731
        self.audit("roi", "", describe(self.context.roi), describe(roi))
        self.context = replace(self.context, roi=roi)
        self._push_context()
        self._mark_recipe_modified()
        self._show_roi()
        self.message("Region of interest cleared: the whole frame is inspected" if roi is None
                     else f"Region of interest set: {roi.describe()}")

    def _show_roi(self) -> None:
        roi = self.context.roi
        self.window.show_roi("Whole frame" if roi is None else roi.describe())

    def start_roi_drawing(self, on: bool) -> None:
        if not self.window.draw_roi(on):
            self.message("Open a source first: the region of interest is drawn on the image", "warning")
            self._show_roi()
            return
        if not on:
            self._show_roi()
            return
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
        self.audit("calibration", f"{cal.count} good images, {cal.percentile:g}th percentile",
                   [self.context.fail_threshold, self.context.review_threshold],
                   [cal.fail_threshold, cal.review_threshold])
        self.set_thresholds(cal.fail_threshold, cal.review_threshold)
        skipped = f"; {len(cal.errors)} unreadable images skipped" if cal.errors else ""
        self.message(f"Calibrated on {cal.count} good images: {cal.percentile:g}th percentile score "
                     f"{cal.percentile_score:.4f} (max {cal.max_score:.4f}) -> review above "
                     f"{cal.review_threshold:.4f}, fail above {cal.fail_threshold:.4f}{skipped}", "ok")
        for error in cal.errors[:5]:
            self.message(error, "warning")
