"""`main.py report` and `main.py audit`: a report of a small log renders to PDF (pages and chart images
checked in the file itself) and HTML (contents), and the audit command finds a tampered chain."""

from __future__ import annotations

import re
import sqlite3

import numpy as np
import pytest
from PIL import Image

import main
from inspection.access import ENGINEER, OPERATOR
from inspection.audit import AuditTrail
from inspection.results_log import ResultsLog


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("DECO_INSPECTOR_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    log = ResultsLog(tmp_path / "results.sqlite")
    overlay = tmp_path / "overlay.png"
    Image.fromarray(np.full((64, 96, 3), (200, 40, 40), np.uint8)).save(overlay)
    rng = np.random.default_rng(3)
    for k in range(300):
        score = float(rng.gamma(4.0, 0.05)) + (0.6 if k % 25 == 0 else 0.0)
        verdict = "fail" if score > 0.5 else "review" if score > 0.4 else "pass"
        log.add(time=f"2026-03-02T{6 + k // 60:02d}:{k % 60:02d}:00.000+01:00", verdict=verdict, score=score,
                threshold=0.5, review_threshold=0.4, recipe="coins", frame_id=f"P{k:04d}", model_id="m1",
                recipe_version="r2", defect_x=0.8 if verdict == "fail" else None,
                defect_y=0.2 if verdict == "fail" else None, overlay_path=str(overlay) if verdict == "fail" else "")
    trail = AuditTrail(log, station="line1-st2")
    trail.record("eve", ENGINEER, "threshold", "fail", 0.45, 0.5, recipe="coins")
    trail.record("olaf", OPERATOR, "false_call", "part 26", "", "glare on the tray", recipe="coins")
    log.close()
    return tmp_path


def test_report_pdf_and_html(home, capsys):
    # open-ended, so that the audit entries (written today) are in the period
    pdf, page = home / "r.pdf", home / "r.html"
    code = main.main(["report", "--log", str(home / "results.sqlite"), "--from", "2026-03-02",
                      "--pdf", str(pdf), "--html", str(page)])
    out = capsys.readouterr().out
    assert code == 0 and "300 parts" in out and "2 audit entries" in out
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF-") and b"%%EOF" in data[-64:]
    pages = len(re.findall(rb"/Type\s*/Page\b", data))
    images = len(re.findall(rb"/Subtype\s*/Image", data))
    assert pages >= 2 and images >= 5   # four charts and the worst parts' overlay
    text = page.read_text(encoding="utf-8")
    assert "Inspection report" in text and "glare on the tray" in text and "the audit chain verifies" in text
    assert text.count("data:image/png;base64,") >= 5 and "#1 P0000" in text and "top right" in text


def test_report_of_a_shift_and_bad_arguments(home, capsys):
    log = str(home / "results.sqlite")
    assert main.main(["report", "--log", log, "--shift", "2026-03-02:early", "--html", str(home / "s.html")]) == 0
    assert "2026-03-02 06:00 to 2026-03-02 14:00: 300 parts" in capsys.readouterr().out
    assert main.main(["report", "--log", log, "--shift", "2026-03-02:lunch", "--pdf", str(home / "x.pdf")]) == 2
    assert "NAME one of early, late, night" in capsys.readouterr().err
    assert main.main(["report", "--log", log]) == 2
    assert "--pdf FILE" in capsys.readouterr().err
    assert main.main(["report", "--log", str(home / "none.sqlite"), "--pdf", str(home / "x.pdf")]) == 2
    assert "no results log" in capsys.readouterr().err


def test_audit_command_lists_and_finds_tampering(home, capsys):
    log = str(home / "results.sqlite")
    assert main.main(["audit", "verify", "--log", log]) == 0
    assert "2 audit entries, the chain verifies" in capsys.readouterr().out
    assert main.main(["audit", "list", "--log", log, "--csv", str(home / "a.csv")]) == 0
    assert (home / "a.csv").read_text().count("\n") == 3
    assert main.main(["audit", "list", "--log", log, "--since", "2000-01-01"]) == 0
    assert "eve (engineer) line1-st2/coins threshold fail: 0.45 -> 0.5" in capsys.readouterr().out
    conn = sqlite3.connect(log)
    conn.executescript("DROP TRIGGER audit_no_update; UPDATE audit SET new_value = 'nothing' WHERE id = 2;")
    conn.close()
    assert main.main(["audit", "verify", "--log", log]) == 1
    assert "TAMPERED: row 2: its contents do not match its hash (edited)" in capsys.readouterr().out
