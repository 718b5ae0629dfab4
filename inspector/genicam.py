"""GenICam cameras through `harvesters` and any GenTL producer (.cti) a station has: the camera
makers' SDKs ship one. Qt-free.

A camera is a source URL (Source ▸ Stream URL in the window, `--source` for `main.py station`,
stored in recipes like any source):

    genicam://DEVICE?cti=/opt/vendor/lib/producer.cti&ExposureTime=5000&Gain=2&PixelFormat=Mono8

DEVICE is the camera's index in the producer's list, or its id, serial number or user-defined
name. `cti` (repeatable) names the producer files; without it the folders in GENICAM_GENTL64_PATH
are searched; `cti=viky` is the simulated camera of the `genicam` wheel (a bouncing ball, 400x400,
RGBa8 or Mono8, 20 frames/s). Every other parameter sets the camera feature of that name before
acquisition starts (ExposureTime, Gain, PixelFormat, Width, Height, OffsetX, OffsetY, TriggerMode,
TriggerSource ...): set `TriggerMode=On&TriggerSource=Line1` to take a picture per pulse on the
camera's trigger line; `software_trigger=1` fires TriggerSoftware before each read.

`GenICamCapture` has the cv2.VideoCapture interface that `LiveCaptureSource` drives, so a GenICam
camera reconnects with backoff after an unplug exactly like an OpenCV camera.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

import cv2
import numpy as np

__all__ = ["GenICamCapture", "GenICamError", "parse_genicam_url", "genicam_url", "list_cameras", "read_features",
           "to_bgr", "SIMULATOR", "SCHEME", "FEATURES"]

SCHEME = "genicam"
SIMULATOR = "viky"           # cti=viky: the genicam wheel's simulated producer
FETCH_TIMEOUT_S = 3.0
OWN_PARAMETERS = {"cti", "software_trigger", "timeout"}
BIT_DEPTH = {"Mono8": 8, "Mono10": 10, "Mono12": 12, "Mono14": 14, "Mono16": 16}
# the camera features the window offers (any other can go into the URL by hand)
FEATURES = ("ExposureTime", "Gain", "PixelFormat", "Width", "Height", "OffsetX", "OffsetY", "TriggerMode",
            "TriggerSource")
COLOUR = {"RGB8": cv2.COLOR_RGB2BGR, "RGBa8": cv2.COLOR_RGBA2BGR, "BGRa8": cv2.COLOR_BGRA2BGR}


class GenICamError(Exception):
    """A GenICam camera that cannot be used; the message names it and says why."""


def _simulator_cti() -> str:
    try:
        import genicam
    except ImportError:
        raise GenICamError("cti=viky needs the Python package genicam (pip install genicam)") from None
    return str(Path(genicam.__file__).parent / "viky.cti")


def genicam_url(device: str, ctis: list[str], features: dict[str, str], software_trigger: bool = False) -> str:
    """The source URL for a camera: genicam://DEVICE?cti=...&Feature=value (empty features left out)."""
    query = [("cti", c) for c in ctis] + [(k, str(v)) for k, v in features.items() if str(v).strip()]
    if software_trigger:
        query.append(("software_trigger", "1"))
    return f"{SCHEME}://{quote(device, safe='')}" + (f"?{urlencode(query, safe='/:')}" if query else "")


def _harvester(ctis: list[str]):
    try:
        from harvesters.core import Harvester
    except ImportError:
        raise GenICamError("GenICam cameras need the Python package harvesters (pip install harvesters)") from None
    harvester = Harvester()
    for cti in ctis:
        harvester.add_file(_simulator_cti() if cti.lower() == SIMULATOR else cti)
    harvester.update()
    return harvester


def list_cameras(ctis: list[str]) -> list[dict]:
    """The cameras the producers find: [{'id', 'name', 'serial'}]."""
    harvester = _harvester(ctis)
    try:
        return [{"id": _info(i, "id_"), "name": _info(i, "display_name"), "serial": _info(i, "serial_number")}
                for i in harvester.device_info_list]
    finally:
        harvester.reset()


def read_features(url: str) -> dict[str, tuple[str, list[str]]]:
    """The camera's current value of each of FEATURES it has, with the choices of enumerations:
    {name: (value, [choices])}. Opens the camera briefly (not while it is streaming elsewhere)."""
    capture = GenICamCapture(url, start=False)
    if capture.problem:
        raise GenICamError(capture.problem)
    try:
        node_map = capture._acquirer.remote_device.node_map
        out = {}
        for name in FEATURES:
            if node_map.has_node(name):
                node = getattr(node_map, name)
                try:
                    out[name] = (str(node.value), [str(c) for c in getattr(node, "symbolics", ()) or ()])
                except Exception:  # noqa: BLE001 - a feature that cannot be read now
                    continue
        return out
    finally:
        capture.release()


def parse_genicam_url(url: str) -> tuple[str, list[str], dict[str, str], bool, float]:
    """(device, producer files, camera features, software trigger, fetch timeout s)."""
    parts = urlsplit(url)
    if parts.scheme.lower() != SCHEME:
        raise GenICamError(f"{url}: not a genicam:// URL")
    device = unquote(parts.netloc + parts.path).strip("/") or "0"
    query = parse_qsl(parts.query, keep_blank_values=True)
    ctis = [_simulator_cti() if v.lower() == SIMULATOR else v for k, v in query if k == "cti"]
    if not ctis:
        for folder in filter(None, os.environ.get("GENICAM_GENTL64_PATH", "").split(os.pathsep)):
            ctis.extend(sorted(glob.glob(os.path.join(folder, "*.cti"))))
    if not ctis:
        raise GenICamError(f"{url}: no GenTL producer: add cti=/path/to/producer.cti (the camera maker's SDK has "
                           "one) or set GENICAM_GENTL64_PATH; cti=viky is the genicam wheel's simulated camera")
    missing = [c for c in ctis if not Path(c).is_file()]
    if missing:
        raise GenICamError(f"{url}: GenTL producer not found: {', '.join(missing)}")
    features = {k: v for k, v in query if k not in OWN_PARAMETERS}
    flags = dict(query)
    try:
        timeout = float(flags.get("timeout", FETCH_TIMEOUT_S))
    except ValueError:
        raise GenICamError(f"{url}: timeout must be a number of seconds") from None
    return device, ctis, features, flags.get("software_trigger", "0").lower() in ("1", "true", "yes"), timeout


def to_bgr(data: np.ndarray, width: int, height: int, pixel_format: str) -> np.ndarray:
    """A GenICam image buffer -> BGR uint8 [height, width, 3]."""
    if pixel_format in BIT_DEPTH:
        mono = data.reshape(height, width)
        if BIT_DEPTH[pixel_format] > 8:
            mono = (mono.astype(np.uint32) >> (BIT_DEPTH[pixel_format] - 8)).astype(np.uint8)
        return cv2.cvtColor(np.ascontiguousarray(mono, np.uint8), cv2.COLOR_GRAY2BGR)
    if pixel_format == "BGR8":
        return data.reshape(height, width, 3).copy()
    if pixel_format in COLOUR:
        channels = 4 if pixel_format.endswith("a8") else 3
        return cv2.cvtColor(data.reshape(height, width, channels), COLOUR[pixel_format])
    raise GenICamError(f"pixel format {pixel_format} is not supported: set PixelFormat=Mono8, RGB8 or BGR8 "
                       "(Mono10/12/14/16, RGBa8 and BGRa8 work too)")


def _info(info, name: str) -> str:
    """A device-info field as text; '' where the producer does not support it (they raise)."""
    try:
        value = getattr(info, name)
    except Exception:  # noqa: BLE001 - GenTL's NotAvailableException and friends
        return ""
    return "" if value is None else str(value)


def _value(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


class GenICamCapture:
    """One GenICam camera with the cv2.VideoCapture interface (isOpened, read, release, set).
    A camera that cannot be opened gives isOpened() False; `problem` says why."""

    def __init__(self, url: str, start: bool = True):
        self.url = url
        self.start = start
        self.problem = ""
        self.warnings: list[str] = []
        self._harvester = None
        self._acquirer = None
        self._lost = False
        try:
            self._open()
        except GenICamError as e:
            self.problem = str(e)
            self.release()
        except Exception as e:  # noqa: BLE001 - a producer's own error types: the camera is not usable
            self.problem = f"{type(e).__name__}: {e}"
            self.release()

    def _open(self) -> None:
        device, ctis, features, self.software_trigger, self.timeout = parse_genicam_url(self.url)
        self._harvester = _harvester(ctis)
        found = self._harvester.device_info_list
        if not found:
            raise GenICamError(f"no camera found by {', '.join(map(os.path.basename, ctis))}")
        index = next((i for i, info in enumerate(found)
                      if device in {_info(info, "id_"), _info(info, "serial_number"), _info(info, "user_defined_name")}),
                     None)
        if index is None and device.isdigit() and int(device) < len(found):
            index = int(device)
        if index is None:
            names = ", ".join(_info(info, "id_") for info in found)
            raise GenICamError(f"no camera {device!r}; the producer lists: {names}")
        self.device_name = _info(found[index], "display_name")
        self._acquirer = self._harvester.create(index)
        node_map = self._acquirer.remote_device.node_map
        if self.software_trigger and not node_map.has_node("TriggerSoftware"):
            raise GenICamError(f"{self.device_name}: software_trigger=1, but the camera has no TriggerSoftware command")
        for name, text in features.items():
            if not node_map.has_node(name):
                self.warnings.append(f"{name}={text} not set: the camera has no feature {name}")
                continue
            try:
                getattr(node_map, name).value = _value(text)
            except Exception as e:  # noqa: BLE001 - a feature the camera lacks or refuses: said, not fatal
                self.warnings.append(f"{name}={text} not set: {type(e).__name__} {e}".strip())
        if self.start:
            self._acquirer.start()

    def isOpened(self) -> bool:
        return self._acquirer is not None and not self._lost

    def set(self, prop, value) -> bool:
        return False   # width, height and rate are camera features in the URL

    def read(self) -> tuple[bool, np.ndarray | None]:
        if not self.isOpened():
            return False, None
        try:
            if self.software_trigger:
                self._acquirer.remote_device.node_map.TriggerSoftware.execute()
            with self._acquirer.fetch(timeout=self.timeout) as buffer:
                component = buffer.payload.components[0]
                return True, to_bgr(component.data, component.width, component.height, str(component.data_format))
        except GenICamError as e:
            self.problem = str(e)
            return False, None
        except Exception as e:  # noqa: BLE001 - a timeout (no frame yet) or a lost device
            if "timeout" not in type(e).__name__.lower():
                self._lost = True       # LiveCaptureSource then reconnects with backoff
                self.problem = f"{type(e).__name__}: {e}"
            return False, None

    def release(self) -> None:
        if self._acquirer is not None:
            try:
                self._acquirer.stop()
                self._acquirer.destroy()
            except Exception:  # noqa: BLE001 - releasing a lost device
                pass
            self._acquirer = None
        if self._harvester is not None:
            try:
                self._harvester.reset()
            except Exception:  # noqa: BLE001
                pass
            self._harvester = None
