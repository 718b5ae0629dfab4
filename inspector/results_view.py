"""The Results tab: logged parts in a filterable table with thumbnails. It shows the rows it
is given and emits filter, false-call, export and replay requests."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QAbstractTableModel, QItemSelectionModel, QModelIndex, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QFont, QImageReader, QPixmap
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QHBoxLayout, QHeaderView, QInputDialog, QLabel,
                               QLineEdit, QPushButton, QTableView, QVBoxLayout, QWidget)

from .display import VERDICT_COLORS
from inspection.results_log import ResultFilter

__all__ = ["ResultsTableModel", "ResultsView", "COLUMNS", "short_frame_id"]

# (header, row key)
COLUMNS = (
    ("", "thumbnail_path"), ("#", "id"), ("Time", "time"), ("Verdict", "verdict"), ("Score", "score"),
    ("Category", "category"), ("Source", "source"), ("File / frame", "frame_id"), ("Review >", "review_threshold"),
    ("Fail >", "threshold"), ("Recipe", "recipe"), ("Model", "model_id"), ("ms", "latency_ms"),
    ("False call", "false_call"), ("Note / error", "note"),
)
THUMB = 44


def short_frame_id(frame_id: str) -> str:
    """'/data/coin/test/scratch/002.jpg' -> 'scratch/002.jpg'; video frames and camera ids unchanged."""
    if "#" in frame_id or not ("/" in frame_id or "\\" in frame_id):
        return frame_id
    path = Path(frame_id)
    return f"{path.parent.name}/{path.name}" if path.parent.name else path.name


class ResultsTableModel(QAbstractTableModel):
    """Rows from the results log (dicts), newest first."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.rows: list[dict] = []
        self._thumbs: dict[str, QPixmap | None] = {}

    def set_rows(self, rows: list[dict]) -> None:
        self.beginResetModel()
        self.rows = rows
        if len(self._thumbs) > 4000:
            self._thumbs.clear()
        self.endResetModel()

    def rowCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section][0]
        return None

    def _thumbnail(self, path: str) -> QPixmap | None:
        if not path:
            return None
        if path not in self._thumbs:
            reader = QImageReader(path)
            size = reader.size()
            if size.isValid():
                reader.setScaledSize(size.scaled(QSize(THUMB, THUMB), Qt.AspectRatioMode.KeepAspectRatio))
            image = reader.read()
            self._thumbs[path] = QPixmap.fromImage(image) if not image.isNull() else None
        return self._thumbs[path]

    def data(self, index: QModelIndex, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        row = self.rows[index.row()]
        key = COLUMNS[index.column()][1]
        if role == Qt.ItemDataRole.DecorationRole and key == "thumbnail_path":
            return self._thumbnail(row.get("thumbnail_path") or "")
        if role == Qt.ItemDataRole.DisplayRole:
            return self._text(row, key)
        if role == Qt.ItemDataRole.BackgroundRole and key == "verdict":
            return QColor(VERDICT_COLORS.get(row.get("verdict", ""), VERDICT_COLORS[""]))
        if role == Qt.ItemDataRole.ForegroundRole and key == "verdict":
            return QColor("#1b1b1b" if row.get("verdict") == "review" else "#ffffff")
        if role == Qt.ItemDataRole.TextAlignmentRole and key == "verdict":
            return int(Qt.AlignmentFlag.AlignCenter)
        if role == Qt.ItemDataRole.FontRole and key == "verdict":
            font = QFont()
            font.setBold(True)
            return font
        if role == Qt.ItemDataRole.TextAlignmentRole and key in ("id", "score", "threshold", "review_threshold",
                                                                  "latency_ms"):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.ToolTipRole:
            return self._tooltip(row)
        if role == Qt.ItemDataRole.UserRole:
            return row.get("id")
        return None

    @staticmethod
    def _text(row: dict, key: str) -> str:
        value = row.get(key)
        if key == "thumbnail_path":
            return ""
        if key == "verdict":
            return str(value or "").upper()
        if key == "time":
            return str(value or "").replace("T", " ")[:19]
        if key in ("score", "threshold", "review_threshold"):
            return "" if value is None else f"{value:.4f}"
        if key == "latency_ms":
            return "" if value is None else f"{value:.0f}"
        if key == "false_call":
            return "yes" if value else ""
        if key == "frame_id":
            return short_frame_id(str(value or ""))
        if key == "note":
            parts = [row.get("false_call_note") or "", row.get("error") or "", row.get("archive_error") or ""]
            return " · ".join(p for p in parts if p)
        return "" if value is None else str(value)

    @staticmethod
    def _tooltip(row: dict) -> str:
        lines = [f"Part {row.get('id')} · {str(row.get('verdict', '')).upper()}", str(row.get("frame_id") or "")]
        if row.get("false_call"):
            lines.append(f"False call ({row.get('false_call_time', '')}): {row.get('false_call_note', '')}")
        for key in ("error", "archive_error", "image_path", "overlay_path"):
            if row.get(key):
                lines.append(f"{key.replace('_', ' ')}: {row[key]}")
        return "\n".join(lines)


class ResultsView(QWidget):
    """Filters, the table, and buttons for false calls, CSV export and refresh."""

    filter_changed = Signal(object)
    false_call_requested = Signal(list, bool, str)
    export_requested = Signal(object)
    refresh_requested = Signal()
    row_activated = Signal(int)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("ResultsView")
        self.verdict_combo = QComboBox()
        for text, value in (("All verdicts", ""), ("Pass", "pass"), ("Review", "review"), ("Fail", "fail"),
                            ("Error", "error"), ("False calls", "false_call")):
            self.verdict_combo.addItem(text, value)
        self.category_combo = QComboBox()
        self.category_combo.addItem("All categories", "")
        self.search = QLineEdit()
        self.search.setPlaceholderText("Search file, source, recipe, note…")
        self.search.setClearButtonEnabled(True)
        self._search_timer = QTimer(self, singleShot=True, interval=300)
        self._search_timer.timeout.connect(self._emit_filter)
        self.search.textChanged.connect(lambda _: self._search_timer.start())
        self.verdict_combo.currentIndexChanged.connect(self._emit_filter)
        self.category_combo.currentIndexChanged.connect(self._emit_filter)
        mark = QPushButton("Mark false call…")
        mark.setToolTip("Flag the selected parts as false calls with a note (the verdict is kept)")
        mark.clicked.connect(self._mark_false_call)
        unmark = QPushButton("Clear false call")
        unmark.clicked.connect(lambda: self._emit_false_call(False, ""))
        export = QPushButton("Export CSV…")
        export.clicked.connect(lambda: self.export_requested.emit(self.current_filter()))
        refresh = QPushButton("Refresh")
        refresh.clicked.connect(self.refresh_requested)
        bar = QHBoxLayout()
        bar.addWidget(self.verdict_combo)
        bar.addWidget(self.category_combo)
        bar.addWidget(self.search, 1)
        bar.addWidget(mark)
        bar.addWidget(unmark)
        bar.addWidget(export)
        bar.addWidget(refresh)
        self.model = ResultsTableModel(self)
        self.table = QTableView()
        self.table.setObjectName("ResultsTable")
        self.table.setModel(self.model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setAlternatingRowColors(True)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(THUMB + 6)
        self.table.setIconSize(QSize(THUMB, THUMB))
        self.table.setWordWrap(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setStretchLastSection(True)
        for col, width in enumerate((THUMB + 12, 56, 150, 80, 72, 90, 150, 190, 82, 72, 100, 120, 50, 80)):
            self.table.setColumnWidth(col, width)
        self.table.doubleClicked.connect(self._activated)
        self.summary = QLabel("")
        self.summary.setObjectName("Hint")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 8, 8, 8)
        layout.addLayout(bar)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.summary)

    def current_filter(self) -> ResultFilter:
        return ResultFilter(verdict=self.verdict_combo.currentData() or "",
                            category=self.category_combo.currentData() or "", text=self.search.text())

    def _emit_filter(self, *_) -> None:
        self.filter_changed.emit(self.current_filter())

    def selected_ids(self) -> list[int]:
        rows = sorted({i.row() for i in self.table.selectionModel().selectedRows()})
        return [int(self.model.rows[r]["id"]) for r in rows if r < len(self.model.rows)]

    def _mark_false_call(self) -> None:
        if not self.selected_ids():
            self.summary.setText("Select one or more rows to mark as false calls")
            return
        note, ok = QInputDialog.getText(self, "Mark false call", "Why is this verdict wrong? (note)")
        if ok:
            self._emit_false_call(True, note)

    def _emit_false_call(self, flag: bool, note: str) -> None:
        ids = self.selected_ids()
        if ids:
            self.false_call_requested.emit(ids, flag, note)

    def _activated(self, index: QModelIndex) -> None:
        if index.isValid():
            self.row_activated.emit(int(self.model.rows[index.row()]["id"]))

    def show_rows(self, rows: list[dict], total: int, summary: str = "") -> None:
        selected = set(self.selected_ids())
        self.model.set_rows(rows)
        selection = self.table.selectionModel()
        flags = QItemSelectionModel.SelectionFlag.Select | QItemSelectionModel.SelectionFlag.Rows
        for r, row in enumerate(rows):
            if row.get("id") in selected:
                selection.select(self.model.index(r, 0), flags)
        shown = f"{len(rows)} of {total} matching parts" if total > len(rows) else f"{total} matching parts"
        self.summary.setText(f"{shown}{' · ' + summary if summary else ''}")

    def show_categories(self, names: list[str]) -> None:
        current = self.category_combo.currentData()
        existing = [self.category_combo.itemData(i) for i in range(1, self.category_combo.count())]
        if existing == list(names):
            return
        self.category_combo.blockSignals(True)
        self.category_combo.clear()
        self.category_combo.addItem("All categories", "")
        for name in names:
            self.category_combo.addItem(name, name)
        index = self.category_combo.findData(current)
        self.category_combo.setCurrentIndex(max(0, index))
        self.category_combo.blockSignals(False)
