"""Draw DeCo Inspector's icon set into resources/icons (run again after changing a drawing).

    python scripts/make_icons.py

The app icon (a magnifier over a part with a defect, and a check mark) is written as SVG, as PNGs
of 16 to 256 pixels (rendered from the SVG with Qt) and as a Windows .ico. The menu icons are
24 x 24 SVGs in one mid-tone blue that reads on the light and on the dark style.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ICONS = ROOT / "resources" / "icons"
APP_ICON = "deco-inspector"
APP_PNG_SIZES = (16, 24, 32, 48, 64, 128, 256)

APP_SVG = """<svg xmlns="http://www.w3.org/2000/svg" width="256" height="256" viewBox="0 0 64 64">
  <rect x="2" y="2" width="60" height="60" rx="13" fill="#161b22"/>
  <rect x="2" y="2" width="60" height="60" rx="13" fill="none" stroke="#1f6feb" stroke-width="3"/>
  <rect x="12" y="14" width="30" height="28" rx="3" fill="#30363d"/>
  <path d="M17 22 L23 27 L20 33" fill="none" stroke="#d93025" stroke-width="2.4" stroke-linecap="round"/>
  <circle cx="27" cy="28" r="13" fill="none" stroke="#e6edf3" stroke-width="4.5"/>
  <line x1="37" y1="38" x2="50" y2="51" stroke="#e6edf3" stroke-width="6" stroke-linecap="round"/>
  <path d="M41 13 L45.5 17.5 L54 8.5" fill="none" stroke="#2ea043" stroke-width="4" stroke-linecap="round"
        stroke-linejoin="round"/>
</svg>
"""

# menu icons: name -> SVG body on a 24 x 24 canvas, drawn with stroke `C` (and fill `F` for solids)
STROKE, FILL = "#4a8fe7", "#4a8fe7"
ACTION_ICONS = {
    "folder": '<path d="M3 6.5 h6 l2 2 h10 v10.5 h-18 z" {s}/>',
    "image": '<rect x="3" y="4.5" width="18" height="15" rx="2" {s}/><circle cx="8.5" cy="9.5" r="1.8" {f}/>'
             '<path d="M4 18 l5.5 -5.5 l4 4 l2.5 -2.5 l4 4" {s}/>',
    "video": '<rect x="2.5" y="6" width="13" height="12" rx="2" {s}/><path d="M15.5 10.5 l6 -3.5 v10 l-6 -3.5 z" {s}/>',
    "camera": '<path d="M3 8 h4 l2 -2.5 h6 l2 2.5 h4 v11 h-18 z" {s}/><circle cx="12" cy="13" r="3.6" {s}/>',
    "stream": '<circle cx="5" cy="19" r="1.8" {f}/><path d="M4 12 a8 8 0 0 1 8 8" {s}/>'
              '<path d="M4 5 a15 15 0 0 1 15 15" {s}/>',
    "model": '<path d="M12 3 l8 4.5 v9 l-8 4.5 l-8 -4.5 v-9 z" {s}/><path d="M4 7.5 l8 4.5 l8 -4.5 M12 12 v9" {s}/>',
    "play": '<path d="M7 4.5 l12 7.5 l-12 7.5 z" {f}/>',
    "pause": '<rect x="6" y="4.5" width="4" height="15" rx="1" {f}/><rect x="14" y="4.5" width="4" height="15" rx="1" {f}/>',
    "step": '<path d="M5 4.5 l10 7.5 l-10 7.5 z" {f}/><rect x="16.5" y="4.5" width="3" height="15" rx="1" {f}/>',
    "stop": '<rect x="5" y="5" width="14" height="14" rx="2" {f}/>',
    "export": '<path d="M12 3.5 v11 M7.5 9.5 l4.5 -5 l4.5 5" {s}/><path d="M4 14 v6 h16 v-6" {s}/>',
    "calibrate": '<path d="M4 7 h16 M4 12 h16 M4 17 h16" {s}/><circle cx="9" cy="7" r="2" {f}/>'
                 '<circle cx="15" cy="12" r="2" {f}/><circle cx="7" cy="17" r="2" {f}/>',
    "train": '<path d="M3 19 l5 -6 l4 3 l7 -9" {s}/><path d="M15 7 h4 v4" {s}/>',
    "theme": '<circle cx="12" cy="12" r="8.5" {s}/><path d="M12 3.5 a8.5 8.5 0 0 1 0 17 z" {f}/>',
    "help": '<circle cx="12" cy="12" r="9" {s}/><path d="M9.3 9.5 a2.8 2.8 0 1 1 3.8 2.6 c-0.8 0.4 -1.1 1 -1.1 1.9" {s}/>'
            '<circle cx="12" cy="17" r="1.2" {f}/>',
    "about": '<circle cx="12" cy="12" r="9" {s}/><path d="M12 11 v6" {s}/><circle cx="12" cy="7.6" r="1.3" {f}/>',
}


def action_svg(body: str) -> str:
    stroke = (f'fill="none" stroke="{STROKE}" stroke-width="2" stroke-linecap="round" '
              'stroke-linejoin="round"')
    return ('<svg xmlns="http://www.w3.org/2000/svg" width="24" height="24" viewBox="0 0 24 24">'
            + body.format(s=stroke, f=f'fill="{FILL}"') + "</svg>\n")


def render_png(svg_path: Path, size: int) -> bytes:
    """The SVG rendered to a size x size RGBA PNG with Qt's SVG renderer."""
    from PySide6.QtCore import QBuffer, QByteArray, QIODevice, Qt
    from PySide6.QtGui import QGuiApplication, QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer

    if QGuiApplication.instance() is None:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
        render_png.app = QGuiApplication(sys.argv[:1])  # kept alive for the following calls
    renderer = QSvgRenderer(str(svg_path))
    if not renderer.isValid():
        raise ValueError(f"{svg_path}: not a valid SVG")
    image = QImage(size, size, QImage.Format.Format_ARGB32)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    renderer.render(painter)
    painter.end()
    data = QByteArray()
    buffer = QBuffer(data)
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    image.save(buffer, "PNG")
    return bytes(data.data())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ICONS, help="icon folder (default: resources/icons)")
    args = parser.parse_args(argv)
    from PIL import Image

    args.out.mkdir(parents=True, exist_ok=True)
    app_svg = args.out / f"{APP_ICON}.svg"
    app_svg.write_text(APP_SVG, encoding="utf-8")
    pngs = {}
    for size in APP_PNG_SIZES:
        pngs[size] = render_png(app_svg, size)
        (args.out / f"{APP_ICON}-{size}.png").write_bytes(pngs[size])
    largest = Image.open(io.BytesIO(pngs[max(APP_PNG_SIZES)]))
    largest.save(args.out / f"{APP_ICON}.ico", format="ICO", sizes=[(s, s) for s in APP_PNG_SIZES])
    for name, body in ACTION_ICONS.items():
        (args.out / f"{name}.svg").write_text(action_svg(body), encoding="utf-8")
    print(f"wrote {1 + len(APP_PNG_SIZES) + 1} app icon files and {len(ACTION_ICONS)} menu icons to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
