"""The shift / date-range report (Qt-free): what it says, gathered from the results log, and its HTML.

`build_report` collects the statistics of the period (inspection.statistics), the worst parts (the
highest-scoring failures, with their archived overlay or thumbnail), the audit entries of the period
and whether the whole audit chain verifies. `report_html` lays it out; the charts are images that the
caller draws and names (CHARTS: yield per hour, p-chart, score histogram, Pareto) so that the same
HTML becomes a self-contained .html file (images inlined) or a PDF (inspector/report_render.py, Qt's
own PDF writer).
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

from engine.version import __version__

from .audit import AuditEntry, read_audit, verify_log
from .results_log import ResultsLog, ResultsLogError, now_text
from .statistics import Period, Statistics, compute_statistics

__all__ = ["ReportData", "WorstPart", "build_report", "report_html", "CHARTS", "WORST_PARTS"]

WORST_PARTS = 6
CHARTS = (("yield", "Yield and parts per hour"), ("pchart", "Fail rate per hour (p-chart)"),
          ("histogram", "Scores of passed, review and failed parts"), ("pareto", "Where on the part failures occur"))


@dataclass(frozen=True)
class WorstPart:
    id: int
    time: str
    frame_id: str
    recipe: str
    recipe_version: str
    category: str
    score: float
    verdict: str
    model_id: str
    threshold: float | None
    image: str   # an archived overlay, else the thumbnail, else ''
    false_call: bool


@dataclass
class ReportData:
    station: str
    period: Period
    recipe: str
    stats: Statistics
    worst: list = field(default_factory=list)
    audit: list = field(default_factory=list)      # AuditEntry of the period
    audit_rows: int = 0
    audit_problems: list = field(default_factory=list)
    generated: str = ""
    generated_by: str = ""


def build_report(log: ResultsLog, period: Period, shifts: tuple, station: str = "", recipe: str = "",
                 generated_by: str = "", worst: int = WORST_PARTS) -> ReportData:
    """Everything the report shows; raises ResultsLogError when the log cannot be read."""
    conn = log.conn
    try:
        stats = compute_statistics(conn, period, shifts, recipe)
        where, params = period.where()
        if recipe:
            where += " AND recipe = ?"
            params = params + [recipe]
        rows = conn.execute(
            f"SELECT id, time, frame_id, recipe, recipe_version, category, score, verdict, model_id, threshold, "
            f"overlay_path, thumbnail_path, false_call FROM parts WHERE {where} AND verdict = 'fail' "
            f"ORDER BY score DESC LIMIT ?", params + [int(worst)]).fetchall()
        audit = read_audit(conn, period.start, period.end)
        audit_rows, problems = verify_log(log)
    except Exception as e:
        if isinstance(e, ResultsLogError):
            raise
        raise ResultsLogError(f"{log.path}: cannot read the report's data: {e}") from None
    parts = [WorstPart(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9],
                       next((p for p in (r[10], r[11]) if p and Path(p).is_file()), ""), bool(r[12])) for r in rows]
    return ReportData(station, period, recipe, stats, parts, audit, audit_rows, problems, now_text(), generated_by)


# A zero-width space after each path separator lets a long file path wrap inside its table cell
# (Qt's text layout does not break a word, so the table ran off the page).
_PATH_BREAK = "\u200b"


def _breakable(text: str) -> str:
    """An (escaped) path that may wrap after each '/' or '\\'."""
    return text.replace("/", "/" + _PATH_BREAK).replace("\\", "\\" + _PATH_BREAK)


def _pct(value) -> str:
    return "–" if value is None else f"{value:.1f} %"


def _rate(value) -> str:
    return "–" if value is None else f"{100.0 * value:.2f} %"


def _counts_row(label, c) -> str:
    cells = [*(label if isinstance(label, tuple) else (label,)), c.total, c.pass_, c.review, c.fail, c.error, _pct(c.yield_percent), c.false_calls,
             _rate(c.false_call_rate)]
    return "<tr>" + "".join(f"<td>{html.escape(str(x))}</td>" for x in cells) + "</tr>"


_COUNT_HEAD = ("<tr>{}<th>parts</th><th>pass</th><th>review</th><th>fail</th><th>error</th><th>yield</th>"
               "<th>false calls</th><th>false-call rate</th></tr>")
STYLE = """
body { font-family: sans-serif; font-size: 9pt; color: #111; }
h1 { font-size: 16pt; margin-bottom: 2px; } h2 { font-size: 12pt; margin-top: 14px; border-bottom: 1px solid #999; }
table { border-collapse: collapse; margin: 4px 0; } th, td { border: 1px solid #bbb; padding: 2px 6px; white-space: nowrap; }
th { background: #e8e8e8; } .bad { color: #b00020; font-weight: bold; } .ok { color: #116611; font-weight: bold; }
.small { color: #555; font-size: 8pt; }
"""


def report_html(data: ReportData, chart_src: dict, image_src=lambda path: path) -> str:
    """The report as HTML. chart_src: chart name (CHARTS) -> image src; image_src(path) -> the src of a
    worst part's image (a file path, or a data: URI for a self-contained file)."""
    s, e = data.stats, html.escape
    out = [f"<html><head><meta charset='utf-8'><title>Inspection report</title><style>{STYLE}</style></head><body>",
           f"<h1>Inspection report: {e(data.station or 'station')}</h1>",
           f"<p>{e(data.period.describe())}{' · recipe ' + e(data.recipe) if data.recipe else ''}<br>"
           f"<span class='small'>Generated {e(data.generated)}{' by ' + e(data.generated_by) if data.generated_by else ''}"
           f" · DeCo Inspector {e(__version__)} · shifts: "
           f"{e(', '.join(f'{n} from {t}' for n, t in s.shifts))}</span></p>",
           "<h2>Summary</h2><table width='100%'>", _COUNT_HEAD.format("<th></th>"), _counts_row("all", s.totals), "</table>",
           f"<p>Fail rate p&#773; = {_rate(s.p_bar)}; hours out of control (3&sigma;): {len(s.out_of_control)}"
           + (": " + e(", ".join(p['hour'].replace('T', ' ') + ':00' for p in s.out_of_control[:12])) if s.out_of_control
              else "") + "</p>"]
    if s.by_shift:
        out += ["<h2>Per shift</h2><table width='100%'>", _COUNT_HEAD.format("<th>day</th><th>shift</th>")]
        out += [_counts_row((d, name), c) for (d, name), c in s.by_shift.items()]
        out.append("</table>")
    if len(s.by_recipe) > 1 or (s.by_recipe and not data.recipe):
        out += ["<h2>Per recipe</h2><table width='100%'>", _COUNT_HEAD.format("<th>recipe</th>")]
        out += [_counts_row(r or "(none)", c) for r, c in s.by_recipe.items()]
        out.append("</table>")
    out.append("<h2>Charts</h2>")
    for name, title in CHARTS:
        if name in chart_src:
            out.append(f"<p><b>{e(title)}</b><br><img src='{e(chart_src[name])}' width='640'></p>")
    if s.pareto:
        out += ["<table><tr><th>zone</th><th>failed parts</th><th>cumulative</th></tr>"]
        out += [f"<tr><td>{e(z)}</td><td>{n}</td><td>{c:.1f} %</td></tr>" for z, n, c in s.pareto]
        out.append(f"</table><p class='small'>{s.located_fails} failed parts with a located defect.</p>")
    out.append(f"<h2>Worst parts ({len(data.worst)})</h2>")
    if data.worst:
        out.append("<table width='100%'><tr><th>image</th><th>part</th></tr>")
        for p in data.worst:
            image = f"<img src='{e(image_src(p.image))}' width='180'>" if p.image else "(no image archived)"
            out.append(f"<tr><td>{image}</td><td>#{p.id} {_breakable(e(p.frame_id))}<br>{e(p.time)}<br>score <b>{p.score:.3f}</b> "
                       f"(fail &gt; {p.threshold if p.threshold is not None else '–'})<br>recipe {e(p.recipe or '–')} "
                       f"{e(p.recipe_version)} · {e(p.category)}<br>model {e(p.model_id)}"
                       f"{'<br><b>marked as a false call</b>' if p.false_call else ''}</td></tr>")
        out.append("</table>")
    else:
        out.append("<p>No failed parts in this period.</p>")
    verdict = ("<span class='ok'>the audit chain verifies</span>" if not data.audit_problems else
               f"<span class='bad'>the audit chain does NOT verify ({len(data.audit_problems)} problems: "
               f"{e('; '.join(data.audit_problems[:3]))})</span>")
    out.append(f"<h2>Audit trail ({len(data.audit)} entries in the period)</h2><p>{data.audit_rows} entries in all; "
               f"{verdict}.</p>")
    if data.audit:
        out.append("<table width='100%'><tr><th>#</th><th>time</th><th>who</th><th>station / recipe</th><th>what</th>"
                   "<th>old</th><th>new</th></tr>")
        for a in data.audit:
            out.append(_audit_row(a))
        out.append("</table>")
    out.append("</body></html>")
    return "\n".join(out)


AUDIT_CELL_CHARS = 120


def _audit_row(a: AuditEntry) -> str:
    e = html.escape
    cut = lambda t: t if len(t) <= AUDIT_CELL_CHARS else t[:AUDIT_CELL_CHARS] + "…"  # noqa: E731
    return (f"<tr><td>{a.id}</td><td>{e(a.time[:19].replace('T', ' '))}</td><td>{e(a.user)} ({e(a.role)})</td>"
            f"<td>{e(a.station)} / {e(a.recipe or '–')}</td><td>{e(a.action)} {e(a.target)}</td>"
            f"<td>{e(cut(a.old_value))}</td><td>{e(cut(a.new_value))}</td></tr>")
