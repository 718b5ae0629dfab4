"""What to open, as it is saved in settings and recipes: `SourceSpec` (camera, stream, video, folder,
image or files), the specs for a typed path or URL, dropped files and the demo images, and
`SourceError`. Qt-free; `inspector.sources` opens them."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .imageio import IMAGE_EXTENSIONS, is_video, list_images, natural_path_key

__all__ = ["SourceError", "SourceSpec", "spec_for_path", "spec_for_drop", "demo_spec", "hide_password", "URL_PATTERN"]

URL_PATTERN = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


class SourceError(Exception):
    """A source that cannot be opened; the message names it and says why."""


@dataclass(frozen=True)
class SourceSpec:
    """What to open, in a form that can be saved in settings and recipes.

    kind: 'camera' (target = index), 'stream' (URL), 'video', 'folder', 'image' (one file)
    or 'files' (several dropped files, in `paths`)."""

    kind: str
    target: str = ""
    recursive: bool = True
    watch: bool = False
    width: int = 0
    height: int = 0
    fps: float = 0.0
    paths: tuple[str, ...] = field(default_factory=tuple)
    name: str = ""

    KINDS = ("camera", "stream", "video", "folder", "image", "files")

    def __post_init__(self) -> None:
        if self.kind not in self.KINDS:
            raise ValueError(f"unknown source kind {self.kind!r}; expected one of {', '.join(self.KINDS)}")
        object.__setattr__(self, "paths", tuple(str(p) for p in self.paths))

    @property
    def live(self) -> bool:
        return self.kind in ("camera", "stream")

    def label(self) -> str:
        """Short name for the operator and the results log."""
        if self.name:
            return self.name
        if self.kind == "camera":
            return f"camera {self.target}"
        if self.kind == "stream":
            return f"stream {hide_password(self.target)}"
        if self.kind == "files":
            return f"{len(self.paths)} dropped files"
        if self.kind == "folder" and self.watch:
            return f"watch {self.target}"
        return f"{self.kind} {self.target}"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["paths"] = list(self.paths)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "SourceSpec":
        if not isinstance(d, dict) or "kind" not in d:
            raise ValueError(f"not a source description: {d!r}")
        known = {k: d[k] for k in ("kind", "target", "recursive", "watch", "width", "height", "fps", "paths", "name")
                 if k in d}
        known["paths"] = tuple(known.get("paths") or ())
        return cls(**known)


def hide_password(url: str) -> str:
    return re.sub(r"//([^:/@]+):[^@/]*@", r"//\1:***@", url)


def spec_for_path(text: str, recursive: bool = True, watch: bool = False) -> SourceSpec:
    """A camera index, stream URL, folder, video or image path -> SourceSpec.
    Raises SourceError for paths that are none of these."""
    text = str(text).strip()
    if text.isascii() and text.isdigit():   # not '²' or '١': str.isdigit() takes those, int() does not
        return SourceSpec("camera", text)
    if URL_PATTERN.match(text):
        return SourceSpec("stream", text)
    path = Path(text)
    if path.is_dir():
        return SourceSpec("folder", str(path), recursive=recursive, watch=watch)
    if not path.exists():
        raise SourceError(f"{text}: no such file or folder")
    if is_video(path):
        return SourceSpec("video", str(path))
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return SourceSpec("image", str(path))
    raise SourceError(f"{text}: not an image, video or folder (images: {', '.join(IMAGE_EXTENSIONS)})")


def spec_for_drop(paths: list[str], recursive: bool = True) -> SourceSpec:
    """Files and folders dropped on the window -> one SourceSpec (several images: 'files')."""
    paths = [str(p) for p in paths if str(p).strip()]
    if not paths:
        raise SourceError("nothing was dropped")
    if len(paths) == 1:
        return spec_for_path(paths[0], recursive=recursive)
    images: list[str] = []
    for p in map(Path, paths):
        if p.is_dir():
            images.extend(str(f) for f in list_images(p, recursive=recursive))
        elif p.suffix.lower() in IMAGE_EXTENSIONS:
            images.append(str(p))
    if not images:
        raise SourceError(f"none of the {len(paths)} dropped items is an image or a folder of images")
    return SourceSpec("files", paths=tuple(images))


def demo_spec(data_dir) -> SourceSpec | None:
    """The test images of an MVTec-layout folder (<category>/test/<kind>/...), interleaved across
    categories and kinds so that a demo run shows a mix of products and defects; None if there are none."""
    data_dir = Path(data_dir)
    kinds = sorted(data_dir.glob("*/test/*"), key=lambda k: natural_path_key(k.relative_to(data_dir)))
    groups = [list_images(kind, recursive=True) for kind in kinds if kind.is_dir()]
    groups = [g for g in groups if g]
    ordered: list[str] = []
    while any(groups):
        for group in groups:
            if group:
                ordered.append(str(group.pop(0)))
    if not ordered:
        return None
    return SourceSpec("files", str(data_dir), paths=tuple(ordered), name=f"demo images ({len(ordered)})")
