"""File outputs of a session: one CSV row per part (written and flushed as it comes) and a JSON
document of rows and summary (written at the end, atomically). Both are InspectionListeners."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

from .records import Inspection, SessionSummary

__all__ = ["ROW_FIELDS", "row_for", "CsvWriter", "JsonWriter"]

ROW_FIELDS = ("index", "file", "frame", "verdict", "score", "threshold", "category", "category_source",
              "category_confidence", "latency_ms", "model_id", "overlay", "error")


def row_for(part: Inspection) -> dict:
    """The CSV/JSON row of a part (ROW_FIELDS): rounded numbers, '' where there is no value."""
    judged = part.score is not None
    return {
        "index": part.index, "file": part.file or part.frame_id,
        "frame": "" if part.frame_number is None else part.frame_number,
        "verdict": part.verdict, "score": round(part.score, 6) if judged else "",
        "threshold": part.fail_threshold, "category": part.category if judged else "",
        "category_source": part.category_source if judged else "",
        "category_confidence": "" if not judged or part.category_confidence is None
        else round(part.category_confidence, 4),
        "latency_ms": round(part.latency_ms, 2) if judged else "",
        "model_id": part.model_id, "overlay": part.overlay_path, "error": part.error,
    }


class CsvWriter:
    """Writes one row per part to `path` (header first), flushed after every row so that a killed
    run keeps what it inspected."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "w", newline="", encoding="utf-8")
        self._writer = csv.DictWriter(self._file, fieldnames=ROW_FIELDS)
        self._writer.writeheader()

    def on_inspection(self, inspection: Inspection) -> None:
        self._writer.writerow(row_for(inspection))
        self._file.flush()

    def on_session_end(self, summary: SessionSummary) -> None:
        self.close()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


class JsonWriter:
    """Collects the rows and writes {"summary": ..., "rows": [...]} to `path` when the session ends
    (through a temporary file, so a reader never sees half a document). `extra_summary` entries
    (what the driver knows: model, device, skipped inputs) are added to the session's summary."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.rows: list[dict] = []
        self.extra_summary: dict = {}

    def on_inspection(self, inspection: Inspection) -> None:
        self.rows.append(row_for(inspection))

    def on_session_end(self, summary: SessionSummary) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        document = {"summary": {**summary.to_dict(), **self.extra_summary}, "rows": self.rows}
        tmp.write_text(json.dumps(document, indent=2), encoding="utf-8")
        os.replace(tmp, self.path)
