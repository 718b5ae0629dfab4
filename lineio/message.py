"""The message every output receives for one inspected part: a flat JSON object.

    message_id        stable id of this part's result (the same in every output and on every resend)
    part_id           the line's id of the part: from the PLC, a barcode or a counter on a station
                      (the frame id; in `main.py inspect` the file, with '#frame' for video frames)
    time              when the verdict was made (ISO 8601 with UTC offset)
    station, recipe   which station, which product setting
    source, frame_id  where the frame came from (camera, file, video#frame)
    category, score, verdict ('pass' | 'review' | 'fail' | 'error'),
    fail_threshold, review_threshold, model_id, overlay_path, error
    log_id            the row of the station's results log (None when there is no log)
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Any, Mapping

__all__ = ["MESSAGE_FIELDS", "VERDICT_CODES", "message_from_record", "message_from_log_row", "encode", "decode",
           "now_iso"]

MESSAGE_FIELDS = ("message_id", "part_id", "time", "station", "recipe", "source", "frame_id", "category", "score",
                  "verdict", "fail_threshold", "review_threshold", "model_id", "overlay_path", "error", "log_id")

# the verdict as a number, for PLC registers and OPC UA (0: no result yet)
VERDICT_CODES = {"pass": 1, "review": 2, "fail": 3, "error": 4}


def now_iso() -> str:
    return datetime.now().astimezone().isoformat(timespec="milliseconds")


def _number(value) -> float | None:
    """A finite float, or None (JSON has no NaN)."""
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _fields(record: Any) -> Mapping:
    if isinstance(record, Mapping):
        return record
    to_dict = getattr(record, "to_dict", None)
    if callable(to_dict):
        return to_dict()
    raise TypeError(f"an inspection record must be a mapping or have to_dict(), got {type(record).__name__}")


def message_from_record(record: Any, station: str, message_id: str = "") -> dict:
    """The message for one inspected part. `record` is an `inspection.Inspection` (its `to_dict()`)
    or a mapping with the same keys: verdict, score, category, fail_threshold (or threshold),
    review_threshold, model_id, recipe, time, source, frame_id, error, overlay_path, and part_id,
    which there is the results-log row (the message's `log_id`). The message's `part_id` is the
    frame id: a station names its frames by the part id from the PLC, a barcode or its counter;
    `main.py inspect` by the file (and video frame)."""
    r = _fields(record)
    verdict = str(r.get("verdict") or "error").lower()
    if verdict not in VERDICT_CODES:
        raise ValueError(f"unknown verdict {verdict!r}; expected one of {', '.join(VERDICT_CODES)}")
    fail = _number(r.get("fail_threshold", r.get("threshold")))
    review = _number(r.get("review_threshold"))
    log_id = r.get("part_id")
    return {
        "message_id": str(message_id or r.get("message_id") or ""),
        "part_id": str(r.get("frame_id") or ""),
        "time": str(r.get("time") or now_iso()),
        "station": station,
        "recipe": str(r.get("recipe") or ""),
        "source": str(r.get("source") or ""),
        "frame_id": str(r.get("frame_id") or ""),
        "category": str(r.get("category") or ""),
        "score": _number(r.get("score")),
        "verdict": verdict,
        "fail_threshold": fail,
        "review_threshold": fail if review is None else review,
        "model_id": str(r.get("model_id") or ""),
        "overlay_path": str(r.get("overlay_path") or ""),
        "error": str(r.get("error") or ""),
        "log_id": None if log_id in (None, "") else int(log_id),
    }


def message_from_log_row(row: Mapping, station: str) -> dict:
    """The message for a row of the results log's `parts` table (catching up after a crash)."""
    fields = dict(row)
    fields["part_id"] = fields.pop("id")
    fields["fail_threshold"] = fields.pop("threshold", None)
    return message_from_record(fields, station)


def encode(message: dict) -> str:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def decode(text: str) -> dict:
    return json.loads(text)
