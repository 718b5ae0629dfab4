"""Display widgets of the Live tab: image views, verdict banner, counters, score trend, filmstrip.
They only show what they are given and emit signals for what the operator does."""

from __future__ import annotations

from collections import deque

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QFont, QIcon, QImage, QPainter, QPen, QPixmap
from PySide6.QtWidgets import (QFrame, QGridLayout, QHBoxLayout, QLabel, QListView, QListWidget, QListWidgetItem,
                               QSizePolicy, QVBoxLayout, QWidget)

from .display import VERDICT_COLORS, VERDICT_TEXT

__all__ = ["to_qimage", "ImageView", "VerdictBanner", "CountersPanel", "TrendPlot", "Filmstrip"]


def to_qimage(rgb: np.ndarray) -> QImage:
    """HxWx3 uint8 RGB -> a QImage that owns its pixels."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if rgb.ndim == 2:
        rgb = np.ascontiguousarray(np.repeat(rgb[..., None], 3, axis=2))
    h, w = rgb.shape[:2]
    return QImage(rgb.data, w, h, rgb.strides[0], QImage.Format.Format_RGB888).copy()


class ImageView(QWidget):
    """An image scaled to fit, with a title, an optional live inset (picture in picture),
    a badge, and a rubber band for drawing a region of interest (emitted as fractions)."""

    roi_selected = Signal(float, float, float, float)
    roi_selection_finished = Signal()

    def __init__(self, title: str = "", placeholder: str = "", parent=None):
        super().__init__(parent)
        self.setObjectName("ImageView")
        self.setMinimumSize(240, 180)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.title = title
        self.placeholder = placeholder
        self.badge = ""
        self.paint_count = 0
        self._image: QImage | None = None
        self._inset: QImage | None = None
        self._scaled: dict[str, QImage] = {}   # "image" / "inset" at the size last painted
        self._inset_label = ""
        self._new_content = False
        self._selecting = False
        self._drag_from: QPointF | None = None
        self._drag_to: QPointF | None = None

    # ----------------------------------------------------------------- content
    def set_image(self, rgb: np.ndarray | None) -> None:
        self._image = None if rgb is None else to_qimage(rgb)
        self._scaled.pop("image", None)
        self._new_content = True
        self.update()

    def set_inset(self, rgb: np.ndarray | None, label: str = "LIVE") -> None:
        self._inset = None if rgb is None else to_qimage(rgb)
        self._scaled.pop("inset", None)
        self._inset_label = label
        self._new_content = True
        self.update()

    def set_badge(self, text: str) -> None:
        self.badge = text
        self.update()

    def has_image(self) -> bool:
        return self._image is not None

    def has_inset(self) -> bool:
        return self._inset is not None

    def is_selecting(self) -> bool:
        return self._selecting

    # ----------------------------------------------------------------- ROI drawing
    def start_roi_selection(self) -> None:
        self._selecting = True
        self.setCursor(Qt.CursorShape.CrossCursor)

    def cancel_roi_selection(self) -> None:
        self._selecting = False
        self._drag_from = self._drag_to = None
        self.unsetCursor()
        self.update()

    def _image_rect(self) -> QRectF:
        if self._image is None:
            return QRectF()
        iw, ih = self._image.width(), self._image.height()
        scale = min(self.width() / iw, self.height() / ih)
        w, h = iw * scale, ih * scale
        return QRectF((self.width() - w) / 2, (self.height() - h) / 2, w, h)

    def mousePressEvent(self, event) -> None:
        if self._selecting and self._image is not None and event.button() == Qt.MouseButton.LeftButton:
            self._drag_from = self._drag_to = event.position()
            self.update()
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event) -> None:
        if self._drag_from is not None:
            self._drag_to = event.position()
            self.update()
        super().mouseMoveEvent(event)

    def mouseReleaseEvent(self, event) -> None:
        if self._drag_from is not None:
            self._drag_to = event.position()
            rect = self._image_rect()
            a, b = self._drag_from, self._drag_to
            fx = sorted(((a.x() - rect.x()) / rect.width(), (b.x() - rect.x()) / rect.width()))
            fy = sorted(((a.y() - rect.y()) / rect.height(), (b.y() - rect.y()) / rect.height()))
            self.cancel_roi_selection()
            if (fx[1] - fx[0]) * rect.width() > 6 and (fy[1] - fy[0]) * rect.height() > 6:
                self.roi_selected.emit(*(min(max(v, 0.0), 1.0) for v in (fx[0], fy[0], fx[1], fy[1])))
            self.roi_selection_finished.emit()
        super().mouseReleaseEvent(event)

    # ----------------------------------------------------------------- painting
    def paintEvent(self, event) -> None:
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        p.fillRect(self.rect(), QColor("#101418"))
        if self._image is not None:
            self._draw_scaled(p, "image", self._image, self._image_rect())
        elif self.placeholder:
            p.setPen(QColor("#7d8793"))
            font = QFont(self.font())
            font.setPointSizeF(font.pointSizeF() * 1.2)
            p.setFont(font)
            p.drawText(self.rect().adjusted(20, 20, -20, -20), Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap,
                       self.placeholder)
        if self._inset is not None:
            self._paint_inset(p)
        if self._drag_from is not None and self._drag_to is not None:
            p.setPen(QPen(QColor("#50c8ff"), 2, Qt.PenStyle.DashLine))
            p.setBrush(QColor(80, 200, 255, 40))
            p.drawRect(QRectF(self._drag_from, self._drag_to).normalized())
        self._paint_label(p, self.title, left=True)
        if self.badge:
            self._paint_label(p, self.badge, left=False)
        if self._new_content:
            self.paint_count += 1
            self._new_content = False
        p.end()

    def _draw_scaled(self, p: QPainter, key: str, image: QImage, target: QRectF) -> None:
        """Draw `image` into `target`, scaled once per new image or size (smoothly, by Qt) and then
        blitted: the live view repaints 30 times a second, and a smooth scale at every paint kept
        Qt's paint threads busy on the cores the engine uses."""
        size = target.toRect().size()
        scaled = self._scaled.get(key)
        if scaled is None or scaled.size() != size:
            scaled = image if image.size() == size else image.scaled(
                size, Qt.AspectRatioMode.IgnoreAspectRatio, Qt.TransformationMode.SmoothTransformation)
            self._scaled[key] = scaled
        p.drawImage(target.toRect().topLeft(), scaled)

    def _paint_inset(self, p: QPainter) -> None:
        iw, ih = self._inset.width(), self._inset.height()
        w = max(120.0, self.width() * 0.28)
        h = w * ih / max(iw, 1)
        target = QRectF(self.width() - w - 10, self.height() - h - 10, w, h)
        self._draw_scaled(p, "inset", self._inset, target)
        p.setPen(QPen(QColor("#50c8ff"), 2))
        p.setBrush(Qt.BrushStyle.NoBrush)
        p.drawRect(target)
        p.setPen(QColor("white"))
        p.fillRect(QRectF(target.x(), target.y(), 54, 18), QColor(0, 0, 0, 160))
        p.drawText(QRectF(target.x(), target.y(), 54, 18), Qt.AlignmentFlag.AlignCenter, self._inset_label)

    def _paint_label(self, p: QPainter, text: str, left: bool) -> None:
        if not text:
            return
        metrics = p.fontMetrics()
        w = metrics.horizontalAdvance(text) + 16
        h = metrics.height() + 8
        x = 8 if left else self.width() - w - 8
        box = QRectF(x, 8, w, h)
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(QColor(0, 0, 0, 150) if left else QColor("#b26a00"))
        p.drawRoundedRect(box, 4, 4)
        p.setPen(QColor("white"))
        p.drawText(box, Qt.AlignmentFlag.AlignCenter, text)


class VerdictBanner(QFrame):
    """The big PASS / REVIEW / FAIL sign with the score and what it was judged against."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("VerdictBanner")
        self.setMinimumHeight(96)
        self.verdict_label = QLabel("READY")
        self.verdict_label.setObjectName("VerdictText")
        self.verdict_label.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
        self.score_label = QLabel("")
        self.score_label.setObjectName("VerdictScore")
        self.detail_label = QLabel("Open a source and press Space to start")
        self.detail_label.setObjectName("VerdictDetail")
        self.detail_label.setWordWrap(True)
        right = QVBoxLayout()
        right.addWidget(self.score_label)
        right.addWidget(self.detail_label)
        right.addStretch(1)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(20, 8, 20, 8)
        layout.addWidget(self.verdict_label, 0)
        layout.addSpacing(24)
        layout.addLayout(right, 1)
        self.verdict = ""
        self._colour_verdict: str | None = None
        self._apply_colour("")

    def _apply_colour(self, verdict: str) -> None:
        if verdict == self._colour_verdict:
            return
        self._colour_verdict = verdict
        colour = VERDICT_COLORS.get(verdict, VERDICT_COLORS[""])
        text_colour = "#1b1b1b" if verdict == "review" else "#ffffff"
        self.setStyleSheet(f"#VerdictBanner {{ background: {colour}; border-radius: 8px; }}"
                           f"#VerdictBanner QLabel {{ color: {text_colour}; background: transparent; }}")

    def show_verdict(self, verdict: str, score: float | None, detail: str = "") -> None:
        self.verdict = verdict
        self.verdict_label.setText(VERDICT_TEXT.get(verdict, verdict.upper()))
        self.score_label.setText("" if score is None else f"score {score:.4f}")
        self.detail_label.setText(detail)
        self._apply_colour(verdict)

    def show_idle(self, detail: str) -> None:
        self.show_verdict("", None, detail)


class CountersPanel(QFrame):
    """Inspected / pass / review / fail / errors / yield for the current session."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("CountersPanel")
        grid = QGridLayout(self)
        grid.setContentsMargins(12, 6, 12, 6)
        grid.setHorizontalSpacing(18)
        grid.setVerticalSpacing(0)
        self.values: dict[str, QLabel] = {}
        for col, (key, title, colour) in enumerate((
                ("inspected", "Inspected", "#e6e9ee"), ("pass", "Pass", VERDICT_COLORS["pass"]),
                ("review", "Review", VERDICT_COLORS["review"]), ("fail", "Fail", VERDICT_COLORS["fail"]),
                ("error", "Errors", "#b39ddb"), ("yield", "Yield", "#e6e9ee"))):
            name = QLabel(title)
            name.setObjectName("CounterName")
            value = QLabel("0" if key != "yield" else "–")
            value.setObjectName("CounterValue")
            value.setStyleSheet(f"color: {colour};")
            name.setAlignment(Qt.AlignmentFlag.AlignCenter)
            value.setAlignment(Qt.AlignmentFlag.AlignCenter)
            grid.addWidget(value, 0, col)
            grid.addWidget(name, 1, col)
            self.values[key] = value

    def show_counts(self, counts: dict[str, int]) -> None:
        judged = counts.get("pass", 0) + counts.get("review", 0) + counts.get("fail", 0)
        for key in ("inspected", "pass", "review", "fail", "error"):
            self.values[key].setText(str(counts.get(key, 0)))
        self.values["yield"].setText(f"{100.0 * counts.get('pass', 0) / judged:.1f}%" if judged else "–")

    def text(self, key: str) -> str:
        return self.values[key].text()


class TrendPlot(QWidget):
    """Scores of the last N parts as coloured dots, with the fail and review threshold lines."""

    def __init__(self, capacity: int = 200, parent=None):
        super().__init__(parent)
        self.capacity = capacity
        self._x: deque = deque(maxlen=capacity)
        self._y: deque = deque(maxlen=capacity)
        self._verdicts: deque = deque(maxlen=capacity)
        self._count = 0
        self._dirty = False
        self.plot = pg.PlotWidget()
        self.plot.setObjectName("TrendPlot")
        self.plot.setBackground("#161b22")
        self.plot.showGrid(x=False, y=True, alpha=0.15)
        self.plot.setLabel("left", "score")
        self.plot.getAxis("left").enableAutoSIPrefix(False)
        self.plot.setLabel("bottom", "part")
        self.plot.setMenuEnabled(False)
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.hideButtons()
        self.plot.setXRange(1, 10, padding=0.02)
        self.plot.setYRange(0, 0.5, padding=0)
        self.plot.setTitle(f"Score trend (last {capacity} parts)", color="#c9d1d9", size="10pt")
        self.line = self.plot.plot([], [], pen=pg.mkPen("#8b949e", width=1))
        self.dots = pg.ScatterPlotItem(size=7, pen=pg.mkPen(None))
        self.plot.addItem(self.dots)
        self.fail_line = pg.InfiniteLine(angle=0, movable=False, pen=pg.mkPen(VERDICT_COLORS["fail"], width=2),
                                         label="fail {value:.3f}",
                                         labelOpts={"position": 0.02, "color": VERDICT_COLORS["fail"],
                                                    "anchors": [(0, 1), (0, 1)]})
        self.review_line = pg.InfiniteLine(angle=0, movable=False,
                                           pen=pg.mkPen(VERDICT_COLORS["review"], width=2, style=Qt.PenStyle.DashLine),
                                           label="review {value:.3f}",
                                           labelOpts={"position": 0.2, "color": VERDICT_COLORS["review"],
                                                      "anchors": [(0, 1), (0, 1)]})
        self.plot.addItem(self.fail_line)
        self.plot.addItem(self.review_line)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.plot)
        self._brushes = {k: pg.mkBrush(v) for k, v in VERDICT_COLORS.items()}

    def add(self, score: float, verdict: str) -> None:
        self._count += 1
        self._x.append(self._count)
        self._y.append(score)
        self._verdicts.append(verdict)
        self._dirty = True

    def set_thresholds(self, fail: float, review: float) -> None:
        self.review_line.setVisible(review < fail)
        self.fail_line.setValue(fail)
        self.review_line.setValue(review)
        for line in (self.fail_line, self.review_line):
            line.label.valueChanged()
        self._dirty = True

    def clear(self) -> None:
        self._x.clear()
        self._y.clear()
        self._verdicts.clear()
        self._dirty = True
        self.refresh()

    def points(self) -> list[float]:
        return list(self._y)

    def refresh(self) -> None:
        """Redraw if anything changed (called at the display rate, not per part)."""
        if not self._dirty:
            return
        self._dirty = False
        x, y = list(self._x), list(self._y)
        self.line.setData(x, y)
        self.dots.setData(x=x, y=y, brush=[self._brushes.get(v, self._brushes[""]) for v in self._verdicts])
        fail, review = self.fail_line.value(), self.review_line.value()
        low = min(y + [review, fail])
        high = max(y + [fail, 1e-3])
        pad = 0.15 * (high - low) + 0.01 * high + 1e-4
        headroom = 0.25 * (high - low) + 0.08 * high + 1e-4  # room for the threshold labels above the lines
        self.plot.setYRange(max(0.0, low - pad), high + headroom, padding=0)
        if x:
            self.plot.setXRange(x[0], max(x[-1], x[0] + 9), padding=0.02)


class Filmstrip(QListWidget):
    """Thumbnails of the last parts, newest first, framed in their verdict colour; clicking one
    asks for a replay of that part."""

    part_selected = Signal(int)

    def __init__(self, capacity: int = 40, parent=None):
        super().__init__(parent)
        self.setObjectName("Filmstrip")
        self.capacity = capacity
        self.setViewMode(QListView.ViewMode.IconMode)
        self.setFlow(QListView.Flow.LeftToRight)
        self.setWrapping(False)
        self.setMovement(QListView.Movement.Static)
        self.setIconSize(QSize(92, 92))
        self.setSpacing(4)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setFixedHeight(138)
        self.itemClicked.connect(lambda item: self.part_selected.emit(int(item.data(Qt.ItemDataRole.UserRole))))

    @staticmethod
    def _icon(thumb: np.ndarray | None, verdict: str, caption: str) -> QIcon:
        size = 92
        pix = QPixmap(size, size)
        pix.fill(QColor(VERDICT_COLORS.get(verdict, VERDICT_COLORS[""])))
        p = QPainter(pix)
        p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        inner = QRectF(4, 4, size - 8, size - 24)
        p.fillRect(inner, QColor("#101418"))
        if thumb is not None:
            img = to_qimage(thumb)
            scale = min(inner.width() / img.width(), inner.height() / img.height())
            w, h = img.width() * scale, img.height() * scale
            p.drawImage(QRectF(inner.x() + (inner.width() - w) / 2, inner.y() + (inner.height() - h) / 2, w, h), img)
        p.setPen(QColor("#1b1b1b" if verdict == "review" else "white"))
        font = p.font()
        font.setBold(True)
        font.setPointSize(8)
        p.setFont(font)
        p.drawText(QRectF(0, size - 20, size, 20), Qt.AlignmentFlag.AlignCenter, caption)
        p.end()
        return QIcon(pix)

    def add_part(self, key: int, thumb: np.ndarray | None, verdict: str, caption: str, tooltip: str = "") -> None:
        item = QListWidgetItem(self._icon(thumb, verdict, caption), "")
        item.setData(Qt.ItemDataRole.UserRole, key)
        item.setToolTip(tooltip)
        item.setSizeHint(QSize(98, 100))
        self.insertItem(0, item)
        while self.count() > self.capacity:
            self.takeItem(self.count() - 1)

    def keys(self) -> list[int]:
        return [int(self.item(i).data(Qt.ItemDataRole.UserRole)) for i in range(self.count())]
