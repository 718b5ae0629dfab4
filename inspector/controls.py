"""The right-hand control panel: model, source, category, thresholds, ROI, display and recipes.
It shows the state it is given and emits a signal for every operator action."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QGridLayout, QGroupBox,
                               QHBoxLayout, QLabel, QListWidget, QListWidgetItem, QPushButton, QScrollArea, QSlider,
                               QSpinBox, QStyle, QVBoxLayout, QWidget)

from engine.overlay import COLORMAPS

from .display import DisplayOptions

__all__ = ["ControlPanel", "ThresholdControl"]

SLIDER_STEPS = 1000
AUTO_CATEGORY = "Auto (classifier)"
AUTO_MIN_SCORE = "Auto (lowest score)"


class ThresholdControl(QWidget):
    """A slider and a numeric box kept in step; emits `value_edited` on operator changes only."""

    value_edited = Signal(float)

    def __init__(self, maximum: float = 1.0, parent=None):
        super().__init__(parent)
        self.maximum = maximum
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(0, SLIDER_STEPS)
        self.box = QDoubleSpinBox()
        self.box.setDecimals(4)
        self.box.setRange(0.0, 100.0)
        self.box.setSingleStep(0.005)
        self.box.setKeyboardTracking(False)
        self.box.setFixedWidth(86)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.slider, 1)
        layout.addWidget(self.box)
        self.slider.valueChanged.connect(self._slider_moved)
        self.box.valueChanged.connect(self._box_changed)

    def value(self) -> float:
        return float(self.box.value())

    def set_value(self, value: float) -> None:
        for w in (self.slider, self.box):
            w.blockSignals(True)
        self.box.setValue(value)
        self.slider.setValue(round(min(value, self.maximum) / self.maximum * SLIDER_STEPS))
        for w in (self.slider, self.box):
            w.blockSignals(False)

    def _slider_moved(self, position: int) -> None:
        value = round(position / SLIDER_STEPS * self.maximum, 4)
        self.box.blockSignals(True)
        self.box.setValue(value)
        self.box.blockSignals(False)
        self.value_edited.emit(value)

    def _box_changed(self, value: float) -> None:
        self.slider.blockSignals(True)
        self.slider.setValue(round(min(value, self.maximum) / self.maximum * SLIDER_STEPS))
        self.slider.blockSignals(False)
        self.value_edited.emit(float(value))


class ControlPanel(QScrollArea):
    """Everything the operator sets, in groups."""

    model_chosen = Signal(str)
    open_model_folder_requested = Signal()
    open_checkpoint_requested = Signal()
    reverse_steps_changed = Signal(int)
    runtime_changed = Signal(str)          # 'openvino int8', 'torch fp32', ...
    gate_fusion_toggled = Signal(bool)
    source_requested = Signal(str)
    folder_options_changed = Signal(bool, bool)
    run_toggled = Signal()
    step_requested = Signal()
    stop_requested = Signal()
    category_chosen = Signal(object)
    thresholds_edited = Signal(float, float)
    calibrate_requested = Signal()
    roi_draw_requested = Signal(bool)
    roi_clear_requested = Signal()
    display_changed = Signal(object)
    recipe_chosen = Signal(str)
    recipe_save_requested = Signal()
    recipe_delete_requested = Signal(str)
    reset_counters_requested = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("ControlPanel")
        self.setWidgetResizable(True)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setMinimumWidth(330)
        body = QWidget()
        body.setObjectName("ControlBody")
        layout = QVBoxLayout(body)
        layout.setContentsMargins(8, 8, 8, 8)
        layout.setSpacing(10)
        # the groups and buttons are kept so that a role that may not use them can be shown them disabled
        self.recipe_box, self.source_box = self._build_recipes(), self._build_source()
        self.model_box, self.judgement_box = self._build_model(), self._build_judgement()
        for box in (self.recipe_box, self.source_box, self.model_box, self.judgement_box, self._build_display()):
            layout.addWidget(box)
        layout.addStretch(1)
        self.setWidget(body)

    # ----------------------------------------------------------------- groups
    def _icon(self, which):
        return self.style().standardIcon(which)

    def _build_recipes(self) -> QGroupBox:
        box = QGroupBox("Recipe")
        self.recipe_list = QListWidget()
        self.recipe_list.setObjectName("RecipeList")
        self.recipe_list.setMaximumHeight(84)
        self.recipe_list.itemClicked.connect(lambda item: self.recipe_chosen.emit(item.text()))
        self.recipe_label = QLabel("No recipe: settings are not saved as a product")
        self.recipe_label.setObjectName("Hint")
        self.recipe_label.setWordWrap(True)
        save = self.recipe_save_button = QPushButton("Save as recipe…")
        save.clicked.connect(self.recipe_save_requested)
        delete = self.recipe_delete_button = QPushButton("Delete")
        delete.clicked.connect(self._delete_recipe)
        row = QHBoxLayout()
        row.addWidget(save, 1)
        row.addWidget(delete)
        v = QVBoxLayout(box)
        v.addWidget(self.recipe_list)
        v.addWidget(self.recipe_label)
        v.addLayout(row)
        return box

    def _delete_recipe(self) -> None:
        item = self.recipe_list.currentItem()
        if item is not None:
            self.recipe_delete_requested.emit(item.text())

    def _build_source(self) -> QGroupBox:
        box = QGroupBox("Source")
        self.source_label = QLabel("No source")
        self.source_label.setObjectName("SourceLabel")
        self.source_label.setWordWrap(True)
        grid = QGridLayout()
        grid.setSpacing(4)
        for k, (kind, text) in enumerate((("folder", "Folder…"), ("image", "Image…"), ("video", "Video…"),
                                          ("camera", "Camera…"), ("stream", "Stream URL…"))):
            button = QPushButton(text)
            button.setObjectName(f"source_{kind}")
            button.clicked.connect(lambda _=False, kind=kind: self.source_requested.emit(kind))
            grid.addWidget(button, k // 3, k % 3)
        self.recursive_check = QCheckBox("Subfolders")
        self.recursive_check.setChecked(True)
        self.watch_check = QCheckBox("Watch for new files")
        for check in (self.recursive_check, self.watch_check):
            check.toggled.connect(lambda _=False: self.folder_options_changed.emit(
                self.recursive_check.isChecked(), self.watch_check.isChecked()))
        options = QHBoxLayout()
        options.addWidget(self.recursive_check)
        options.addWidget(self.watch_check)
        self.run_button = QPushButton("Start")
        self.run_button.setObjectName("RunButton")
        self.run_button.setIcon(self._icon(QStyle.StandardPixmap.SP_MediaPlay))
        self.run_button.setToolTip("Start / pause (Space)")
        self.run_button.clicked.connect(self.run_toggled)
        self.step_button = QPushButton("Step")
        self.step_button.setIcon(self._icon(QStyle.StandardPixmap.SP_MediaSkipForward))
        self.step_button.setToolTip("Inspect one more frame (S)")
        self.step_button.clicked.connect(self.step_requested)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setIcon(self._icon(QStyle.StandardPixmap.SP_MediaStop))
        self.stop_button.setToolTip("Stop (Esc)")
        self.stop_button.clicked.connect(self.stop_requested)
        transport = QHBoxLayout()
        transport.addWidget(self.run_button, 2)
        transport.addWidget(self.step_button, 1)
        transport.addWidget(self.stop_button, 1)
        self.progress_label = QLabel("")
        self.progress_label.setObjectName("Hint")
        v = QVBoxLayout(box)
        v.addWidget(self.source_label)
        v.addLayout(grid)
        v.addLayout(options)
        v.addLayout(transport)
        v.addWidget(self.progress_label)
        return box

    def _build_model(self) -> QGroupBox:
        box = QGroupBox("Model")
        self.model_combo = QComboBox()
        self.model_combo.setObjectName("ModelCombo")
        self.model_combo.setPlaceholderText("No model: open a folder or checkpoint")
        self.model_combo.activated.connect(self._model_activated)
        folder = QPushButton("Open folder…")
        folder.clicked.connect(self.open_model_folder_requested)
        checkpoint = QPushButton("Open .pt…")
        checkpoint.clicked.connect(self.open_checkpoint_requested)
        row = QHBoxLayout()
        row.addWidget(folder)
        row.addWidget(checkpoint)
        self.model_info = QLabel("No model loaded")
        self.model_info.setObjectName("Hint")
        self.model_info.setWordWrap(True)
        self.model_info.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.steps_spin = QSpinBox()
        self.steps_spin.setRange(1, 50)
        self.steps_spin.setValue(5)
        self.steps_spin.setKeyboardTracking(False)
        self.steps_spin.setToolTip("DDIM reverse steps: more is slower and can reconstruct better")
        self.steps_spin.valueChanged.connect(self.reverse_steps_changed)
        self.gate_check = QCheckBox("Gate fusion")
        self.gate_check.setToolTip("Fuse the DoD gate map into the anomaly map (models trained with gating)")
        self.gate_check.toggled.connect(self.gate_fusion_toggled)
        self.runtime_combo = QComboBox()
        self.runtime_combo.setObjectName("RuntimeCombo")
        self.runtime_combo.setToolTip("How the networks run: PyTorch or OpenVINO, at fp32, bf16 or int8. The "
                                      "default is the fastest setting that kept this model's verdicts on this "
                                      "machine (checked once, on the model's own good images).")
        self.runtime_combo.setEnabled(False)
        self.runtime_combo.activated.connect(
            lambda i: self.runtime_changed.emit(str(self.runtime_combo.itemData(i))))
        form = QFormLayout()
        form.addRow("Reverse steps", self.steps_spin)
        form.addRow("Runtime", self.runtime_combo)
        form.addRow("", self.gate_check)
        v = QVBoxLayout(box)
        v.addWidget(self.model_combo)
        v.addLayout(row)
        v.addWidget(self.model_info)
        v.addLayout(form)
        return box

    def _model_activated(self, index: int) -> None:
        path = self.model_combo.itemData(index)
        if path:
            self.model_chosen.emit(str(path))

    def _build_judgement(self) -> QGroupBox:
        box = QGroupBox("Inspection")
        self.category_combo = QComboBox()
        self.category_combo.setObjectName("CategoryCombo")
        self.category_combo.addItem(AUTO_CATEGORY, None)
        self.category_combo.activated.connect(
            lambda i: self.category_chosen.emit(self.category_combo.itemData(i)))
        self.fail_control = ThresholdControl()
        self.review_control = ThresholdControl()
        self.fail_control.value_edited.connect(self._fail_edited)
        self.review_control.value_edited.connect(self._review_edited)
        calibrate = QPushButton("Calibrate from good images…")
        calibrate.setToolTip("Suggest thresholds from the scores of known-good parts (99th percentile + margin)")
        calibrate.clicked.connect(self.calibrate_requested)
        self.roi_button = QPushButton("Draw ROI")
        self.roi_button.setCheckable(True)
        self.roi_button.setToolTip("Drag a rectangle on the image: only that region is inspected")
        self.roi_button.toggled.connect(self.roi_draw_requested)
        clear_roi = QPushButton("Clear ROI")
        clear_roi.clicked.connect(self.roi_clear_requested)
        self.roi_label = QLabel("Whole frame")
        self.roi_label.setObjectName("Hint")
        roi_row = QHBoxLayout()
        roi_row.addWidget(self.roi_button)
        roi_row.addWidget(clear_roi)
        form = QFormLayout()
        form.addRow("Category", self.category_combo)
        form.addRow("Fail above", self.fail_control)
        form.addRow("Review above", self.review_control)
        form.addRow("", calibrate)
        form.addRow("ROI", roi_row)
        form.addRow("", self.roi_label)
        box.setLayout(form)
        return box

    def _fail_edited(self, fail: float) -> None:
        review = self.review_control.value()
        if review > fail:
            self.review_control.set_value(fail)
            review = fail
        self.thresholds_edited.emit(fail, review)

    def _review_edited(self, review: float) -> None:
        fail = self.fail_control.value()
        if review > fail:
            self.review_control.set_value(fail)
            review = fail
        self.thresholds_edited.emit(fail, review)

    def _build_display(self) -> QGroupBox:
        box = QGroupBox("Display")
        self.overlay_check = QCheckBox("Heatmap (H)")
        self.overlay_check.setChecked(True)
        self.contour_check = QCheckBox("Defect outline (C)")
        self.contour_check.setChecked(True)
        self.recon_check = QCheckBox("Reconstruction side by side (R)")
        self.full_heatmap_check = QCheckBox("Full heatmap (F)")
        self.full_heatmap_check.setToolTip("Colour the whole anomaly map; off: only where it exceeds the review "
                                           "level (also in saved overlays and the reject archive)")
        self.opacity_slider = QSlider(Qt.Orientation.Horizontal)
        self.opacity_slider.setRange(0, 100)
        self.opacity_slider.setValue(50)
        self.colormap_combo = QComboBox()
        self.colormap_combo.addItems(list(COLORMAPS))
        self.repaint_spin = QSpinBox()
        self.repaint_spin.setRange(1, 120)
        self.repaint_spin.setValue(30)
        self.repaint_spin.setSuffix(" Hz")
        self.repaint_spin.setToolTip("How often the live view is repainted")
        for check in (self.overlay_check, self.contour_check, self.recon_check, self.full_heatmap_check):
            check.toggled.connect(self._emit_display)
        self.opacity_slider.valueChanged.connect(self._emit_display)
        self.colormap_combo.currentIndexChanged.connect(self._emit_display)
        self.repaint_spin.valueChanged.connect(self._emit_display)
        checks = QHBoxLayout()
        checks.addWidget(self.overlay_check)
        checks.addWidget(self.contour_check)
        form = QFormLayout()
        form.addRow(checks)
        form.addRow(self.full_heatmap_check)
        form.addRow("Opacity", self.opacity_slider)
        form.addRow("Colours", self.colormap_combo)
        form.addRow(self.recon_check)
        form.addRow("Repaint", self.repaint_spin)
        box.setLayout(form)
        return box

    def display_options(self) -> DisplayOptions:
        return DisplayOptions(overlay=self.overlay_check.isChecked(), opacity=self.opacity_slider.value() / 100.0,
                              colormap=self.colormap_combo.currentText(), contour=self.contour_check.isChecked(),
                              reconstruction=self.recon_check.isChecked(), repaint_hz=self.repaint_spin.value(),
                              full_heatmap=self.full_heatmap_check.isChecked())

    def _emit_display(self, *_) -> None:
        self.display_changed.emit(self.display_options())

    # ----------------------------------------------------------------- showing state
    def show_display_options(self, options: DisplayOptions) -> None:
        widgets = (self.overlay_check, self.contour_check, self.recon_check, self.full_heatmap_check,
                   self.opacity_slider, self.colormap_combo, self.repaint_spin)
        for w in widgets:
            w.blockSignals(True)
        self.overlay_check.setChecked(options.overlay)
        self.contour_check.setChecked(options.contour)
        self.recon_check.setChecked(options.reconstruction)
        self.full_heatmap_check.setChecked(options.full_heatmap)
        self.opacity_slider.setValue(round(options.opacity * 100))
        self.colormap_combo.setCurrentText(options.colormap)
        self.repaint_spin.setValue(options.repaint_hz)
        for w in widgets:
            w.blockSignals(False)

    def show_models(self, entries: list[tuple[str, str]], current: str) -> None:
        """(label, path) pairs for the model combo, `current` selected."""
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        for label, path in entries:
            self.model_combo.addItem(label, path)
            self.model_combo.setItemData(self.model_combo.count() - 1, path, Qt.ItemDataRole.ToolTipRole)
        index = self.model_combo.findData(current)
        if index >= 0:
            self.model_combo.setCurrentIndex(index)
        self.model_combo.blockSignals(False)

    def show_model_info(self, text: str, reverse_steps: int | None = None, gate_fusion: bool | None = None,
                        gating_available: bool = True) -> None:
        self.model_info.setText(text)
        if reverse_steps is not None:
            self.steps_spin.blockSignals(True)
            self.steps_spin.setValue(reverse_steps)
            self.steps_spin.blockSignals(False)
        if gate_fusion is not None:
            self.gate_check.blockSignals(True)
            self.gate_check.setChecked(gate_fusion)
            self.gate_check.blockSignals(False)
        self.gate_check.setEnabled(gating_available)

    def show_runtimes(self, options: list[tuple[str, str]], current: str) -> None:
        """options: (label, name) per runtime / precision; current: the name in use."""
        self.runtime_combo.blockSignals(True)
        self.runtime_combo.clear()
        for label, name in options:
            self.runtime_combo.addItem(label, name)
        self.runtime_combo.setCurrentIndex(max(self.runtime_combo.findData(current), 0))
        self.runtime_combo.setEnabled(bool(options))
        self.runtime_combo.blockSignals(False)

    def show_categories(self, names: list[str], current: str | None, auto_available: bool,
                        auto_label: str = AUTO_CATEGORY) -> None:
        self.category_combo.blockSignals(True)
        self.category_combo.clear()
        if auto_available:
            self.category_combo.addItem(auto_label, None)
        for name in names:
            self.category_combo.addItem(name, name)
        index = self.category_combo.findData(current) if current is not None else 0
        self.category_combo.setCurrentIndex(max(index, 0))
        self.category_combo.blockSignals(False)

    def show_thresholds(self, fail: float, review: float) -> None:
        self.fail_control.set_value(fail)
        self.review_control.set_value(review)

    def show_roi(self, text: str) -> None:
        self.roi_label.setText(text)
        self.roi_button.blockSignals(True)
        self.roi_button.setChecked(False)
        self.roi_button.blockSignals(False)

    def show_recipes(self, names: list[str], current: str, modified: bool = False) -> None:
        self.recipe_list.clear()
        self.recipe_list.setVisible(bool(names))
        for name in names:
            item = QListWidgetItem(name)
            self.recipe_list.addItem(item)
            if name == current:
                self.recipe_list.setCurrentItem(item)
        if current:
            self.recipe_label.setText(f"Running recipe <b>{current}</b>{' (modified, not saved)' if modified else ''}")
        else:
            self.recipe_label.setText("No recipe: click one to switch product, or save the current settings")

    def show_source(self, text: str, tooltip: str = "") -> None:
        self.source_label.setText(text)
        self.source_label.setToolTip(tooltip or text)

    def show_folder_options(self, recursive: bool, watch: bool) -> None:
        for check, value in ((self.recursive_check, recursive), (self.watch_check, watch)):
            check.blockSignals(True)
            check.setChecked(value)
            check.blockSignals(False)

    def show_run_state(self, state: str, has_source: bool) -> None:
        playing = state == "playing"
        self.run_button.setText("Pause" if playing else "Start")
        self.run_button.setIcon(self._icon(QStyle.StandardPixmap.SP_MediaPause if playing
                                           else QStyle.StandardPixmap.SP_MediaPlay))
        self.step_button.setEnabled(has_source and not playing)
        self.stop_button.setEnabled(has_source and state != "stopped")

    def show_progress(self, text: str) -> None:
        self.progress_label.setText(text)
