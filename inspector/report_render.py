"""The report as a PDF (Qt's own PDF writer, no browser) and as a self-contained HTML file, with its
charts drawn by QPainter (inspection.report has what it says and its HTML). Needs a QGuiApplication
(the `report` command makes an offscreen one)."""

from __future__ import annotations

import base64
import math
from pathlib import Path

from PySide6.QtCore import QBuffer, QIODevice, QMarginsF, QPointF, QRectF, Qt, QUrl
from PySide6.QtGui import (QColor, QFont, QImage, QPageLayout, QPageSize, QPainter, QPainterPath, QPdfWriter, QPen,
                           QTextDocument)

from inspection.report import ReportData, report_html

__all__ = ["draw_charts", "write_pdf", "write_html", "chart_png"]

CHART_W, CHART_H = 1280, 440        # pixels of a chart image (drawn at 640 points wide in the report)
MARGIN_L, MARGIN_R, MARGIN_T, MARGIN_B = 90, 90, 30, 84
X_LABELS = 8   # at most this many labels under a time axis
PDF_DPI = 150
PDF_MARGIN_MM = 12
COLORS = {"pass": QColor("#2e9e44"), "review": QColor("#e0a000"), "fail": QColor("#d03030"), "bars": QColor("#9aa5b1"),
          "line": QColor("#1f5fbf"), "limit": QColor("#b00020"), "axis": QColor("#333333"), "grid": QColor("#dddddd")}


class _Plot:
    """A plot area on a white QImage with a left (and optional right) axis and x labels."""

    def __init__(self, title: str = ""):
        self.image = QImage(CHART_W, CHART_H, QImage.Format.Format_ARGB32)
        self.image.fill(QColor("white"))
        self.p = QPainter(self.image)
        self.p.setRenderHint(QPainter.RenderHint.Antialiasing)
        font = QFont()
        font.setPixelSize(18)
        self.p.setFont(font)
        self.area = QRectF(MARGIN_L, MARGIN_T, CHART_W - MARGIN_L - MARGIN_R, CHART_H - MARGIN_T - MARGIN_B)
        if title:
            self.p.drawText(QRectF(0, 0, CHART_W, MARGIN_T), Qt.AlignmentFlag.AlignCenter, title)

    def x(self, i: float, n: int) -> float:
        return self.area.left() + (i + 0.5) * self.area.width() / max(n, 1)

    def y(self, v: float, top: float) -> float:
        return self.area.bottom() - (v / top if top > 0 else 0.0) * self.area.height()

    def axes(self, top: float, fmt, right_top: float | None = None, right_fmt=None, ticks: int = 4) -> None:
        p = self.p
        for k in range(ticks + 1):
            v = top * k / ticks
            yy = self.y(v, top)
            p.setPen(QPen(COLORS["grid"], 1))
            p.drawLine(QPointF(self.area.left(), yy), QPointF(self.area.right(), yy))
            p.setPen(COLORS["axis"])
            p.drawText(QRectF(0, yy - 12, MARGIN_L - 8, 24), Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter,
                       fmt(v))
            if right_top is not None:
                p.drawText(QRectF(self.area.right() + 8, yy - 12, MARGIN_R - 8, 24), Qt.AlignmentFlag.AlignLeft
                           | Qt.AlignmentFlag.AlignVCenter, right_fmt(right_top * k / ticks))
        p.setPen(QPen(COLORS["axis"], 2))
        p.drawRect(self.area)

    def x_labels(self, labels: list[str], every: int | None = None) -> None:
        n = len(labels)
        every = every or max(1, math.ceil(n / X_LABELS))
        self.p.setPen(COLORS["axis"])
        for i in range(0, n, every):
            self.p.drawText(QRectF(self.x(i, n) - 80, self.area.bottom() + 4, 160, MARGIN_B - 30),
                            Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop, labels[i])

    def legend(self, items: list[tuple[str, QColor]]) -> None:
        x = self.area.left()
        for text, colour in items:
            self.p.fillRect(QRectF(x, CHART_H - 24, 18, 14), colour)
            self.p.setPen(COLORS["axis"])
            self.p.drawText(QPointF(x + 24, CHART_H - 11), text)
            x += 40 + self.p.fontMetrics().horizontalAdvance(text)

    def polyline(self, points: list[QPointF], pen: QPen) -> None:
        if len(points) < 2:
            return
        path = QPainterPath(points[0])
        for pt in points[1:]:
            path.lineTo(pt)
        self.p.setPen(pen)
        self.p.setBrush(Qt.BrushStyle.NoBrush)
        self.p.drawPath(path)

    def done(self) -> QImage:
        self.p.end()
        return self.image


def _hour_label(hour: str) -> str:
    return f"{hour[5:10]} {hour[11:13]}h"


def yield_chart(stats) -> QImage:
    plot = _Plot()
    hours = list(stats.hourly.items())
    top = max([c.total for _, c in hours] or [1])
    plot.axes(top, lambda v: f"{v:.0f}", 100.0, lambda v: f"{v:.0f} %")
    n = len(hours)
    width = max(1.0, 0.8 * plot.area.width() / max(n, 1))
    points = []
    for i, (_, c) in enumerate(hours):
        plot.p.fillRect(QRectF(plot.x(i, n) - width / 2, plot.y(c.total, top), width,
                               plot.area.bottom() - plot.y(c.total, top)), COLORS["bars"])
        if c.yield_percent is not None:
            points.append(QPointF(plot.x(i, n), plot.y(c.yield_percent, 100.0)))
    plot.polyline(points, QPen(COLORS["pass"], 3))
    plot.x_labels([_hour_label(h) for h, _ in hours])
    plot.legend([("parts per hour (left)", COLORS["bars"]), ("yield (right)", COLORS["pass"])])
    return plot.done()


def pchart_chart(stats) -> QImage:
    plot = _Plot()
    pts = stats.pchart
    top = max([max(p["p"], p["ucl"]) for p in pts] or [0.01]) * 1.1
    plot.axes(top, lambda v: f"{100 * v:.1f} %")
    n = len(pts)
    plot.polyline([QPointF(plot.x(i, n), plot.y(p["ucl"], top)) for i, p in enumerate(pts)], QPen(COLORS["limit"], 2,
                                                                                                    Qt.PenStyle.DashLine))
    plot.polyline([QPointF(plot.x(i, n), plot.y(p["lcl"], top)) for i, p in enumerate(pts)], QPen(COLORS["limit"], 2,
                                                                                                    Qt.PenStyle.DashLine))
    if stats.p_bar is not None and n:
        plot.polyline([QPointF(plot.area.left(), plot.y(stats.p_bar, top)),
                       QPointF(plot.area.right(), plot.y(stats.p_bar, top))], QPen(COLORS["axis"], 2))
    plot.polyline([QPointF(plot.x(i, n), plot.y(p["p"], top)) for i, p in enumerate(pts)], QPen(COLORS["line"], 2))
    for i, p in enumerate(pts):
        colour = COLORS["limit"] if p["out"] else COLORS["line"]
        plot.p.setPen(Qt.PenStyle.NoPen)
        plot.p.setBrush(colour)
        r = 8 if p["out"] else 3
        plot.p.drawEllipse(QPointF(plot.x(i, n), plot.y(p["p"], top)), r, r)
    plot.x_labels([_hour_label(p["hour"]) for p in pts])
    plot.legend([("fail rate", COLORS["line"]), ("p-bar", COLORS["axis"]), ("3-sigma limits", COLORS["limit"]),
                 (f"out of control: {len(stats.out_of_control)}", COLORS["limit"])])
    return plot.done()


def histogram_chart(stats) -> QImage:
    plot = _Plot()
    edges = stats.hist_edges
    bins = max(len(edges) - 1, 1)
    top = math.log10(1 + max([max(v) for v in stats.hist.values() if v] or [1]))
    plot.axes(top, lambda v: f"{10 ** v - 1:.0f}")
    third = plot.area.width() / bins / 3.2   # three verdicts side by side in each bin
    for k, verdict in enumerate(("pass", "review", "fail")):
        for b, count in enumerate(stats.hist.get(verdict, [])):
            if count:
                h = math.log10(1 + count)
                x = plot.x(b, bins) + (k - 1) * third
                plot.p.fillRect(QRectF(x - third / 2, plot.y(h, top), third, plot.area.bottom() - plot.y(h, top)),
                                COLORS[verdict])
    for value, colour in ((stats.review_threshold, COLORS["review"]), (stats.fail_threshold, COLORS["fail"])):
        if value is not None and edges:
            x = plot.area.left() + value / edges[-1] * plot.area.width()
            plot.polyline([QPointF(x, plot.area.top()), QPointF(x, plot.area.bottom())], QPen(colour, 3,
                                                                                              Qt.PenStyle.DashLine))
    plot.p.setPen(COLORS["axis"])
    for b in range(0, bins + 1, max(1, bins // 10)):   # labels at the bin edges
        x = plot.area.left() + b / bins * plot.area.width()
        plot.p.drawText(QRectF(x - 60, plot.area.bottom() + 4, 120, MARGIN_B - 30), Qt.AlignmentFlag.AlignHCenter,
                        f"{edges[b]:.2f}")
    plot.legend([("pass", COLORS["pass"]), ("review", COLORS["review"]), ("fail", COLORS["fail"]),
                 ("thresholds (dashed); parts, log scale", COLORS["axis"])])
    return plot.done()


def pareto_chart(stats) -> QImage:
    plot = _Plot()
    rows = stats.pareto
    top = max([n for _, n, _ in rows] or [1])
    plot.axes(top, lambda v: f"{v:.0f}", 100.0, lambda v: f"{v:.0f} %")
    n = len(rows)
    width = 0.7 * plot.area.width() / max(n, 1)
    for i, (_, count, _) in enumerate(rows):
        plot.p.fillRect(QRectF(plot.x(i, n) - width / 2, plot.y(count, top), width,
                               plot.area.bottom() - plot.y(count, top)), COLORS["fail"])
    plot.polyline([QPointF(plot.x(i, n), plot.y(c, 100.0)) for i, (_, _, c) in enumerate(rows)],
                  QPen(COLORS["line"], 3))
    plot.x_labels([z.replace(" ", "\n") for z, _, _ in rows], every=1)   # two lines: nine zones fit
    plot.legend([("failed parts (left)", COLORS["fail"]), ("cumulative (right)", COLORS["line"])])
    return plot.done()


def draw_charts(data: ReportData) -> dict[str, QImage]:
    """Chart name (inspection.report.CHARTS) -> image."""
    s = data.stats
    return {"yield": yield_chart(s), "pchart": pchart_chart(s), "histogram": histogram_chart(s),
            "pareto": pareto_chart(s)}


def chart_png(image: QImage) -> bytes:
    buffer = QBuffer()
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    image.save(buffer, "PNG")
    return bytes(buffer.data())


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _file_uri(path: str) -> str:
    try:
        return _data_uri(Path(path).read_bytes()) if path.lower().endswith(".png") else \
            "data:image/jpeg;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")
    except OSError:
        return ""


def write_html(data: ReportData, path) -> Path:
    """A self-contained HTML file (charts and part images inlined)."""
    charts = {name: _data_uri(chart_png(image)) for name, image in draw_charts(data).items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report_html(data, charts, _file_uri), encoding="utf-8")
    return path


def write_pdf(data: ReportData, path) -> Path:
    """An A4 PDF through QTextDocument and QPdfWriter."""
    doc = QTextDocument()
    charts = {}
    for name, image in draw_charts(data).items():
        url = f"chart://{name}.png"
        doc.addResource(QTextDocument.ResourceType.ImageResource, QUrl(url), image)
        charts[name] = url
    images: dict[str, str] = {}

    def part_image(file: str) -> str:
        if file not in images:
            image = QImage(file)
            url = f"part://{len(images)}.png"
            if not image.isNull():
                doc.addResource(QTextDocument.ResourceType.ImageResource, QUrl(url), image)
            images[file] = url
        return images[file]

    doc.setHtml(report_html(data, charts, part_image))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = QPdfWriter(str(path))
    writer.setResolution(PDF_DPI)
    writer.setPageLayout(QPageLayout(QPageSize(QPageSize.PageSizeId.A4), QPageLayout.Orientation.Portrait,
                                     QMarginsF(PDF_MARGIN_MM, PDF_MARGIN_MM, PDF_MARGIN_MM, PDF_MARGIN_MM),
                                     QPageLayout.Unit.Millimeter))
    writer.setTitle("Inspection report")
    writer.setCreator("DeCo Inspector")
    doc.print_(writer)   # paginates, with page numbers
    return path
