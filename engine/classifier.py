"""Category classifier: picks which product category an image shows before the anomaly detector runs.

Two architectures share one config and one inference wrapper:

* ``"compact"``: a small conv-BN-ReLU CNN (< 1 M parameters) that trains on a CPU in minutes.
* ``"resnet18"``: a from-scratch ResNet-18 whose state-dict keys equal torchvision's with a
  ``backbone.`` prefix and ``backbone.fc = Sequential(Dropout, Linear(512, C))``, so the DeCo-Diff
  reference checkpoint ``classifier_mvtec.pth`` loads unchanged (see ../shared/reference/spec.md,
  section 6).

Our own format is a folder with ``classifier.json`` (the config) and ``classifier.safetensors``.
Reference ``.pth`` files are read only with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn

from .state_dicts import compare_state_dict

__all__ = [
    "ARCHS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ClassifierConfig",
    "CompactClassifier",
    "ResNet18Classifier",
    "CategoryClassifier",
    "build_classifier",
    "save_classifier",
    "load_classifier",
]

ARCHS = ("compact", "resnet18")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CONFIG_NAME = "classifier.json"
WEIGHTS_NAME = "classifier.safetensors"
# Channel multipliers of the five stride-2 stages of CompactClassifier (times `width`).
COMPACT_STAGE_MULT = (1, 1, 2, 4, 8)
_SHOW = 5
# how a classifier file that does not fit is described (see StateDictMismatch.describe)
KEY_FORMATS = ("missing {count} keys (first: {names})", "unexpected {count} keys (first: {names})",
               "{count} shape mismatches (first: {names})")


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@dataclass
class ClassifierConfig:
    """Everything needed to build a classifier and preprocess its input; saved as JSON beside the weights.

    The whole image is resized to ``image_size``² (no crop), scaled to [0, 1] and normalised with
    ``mean``/``std``. ``width`` only affects ``"compact"``; ``dropout`` is applied before the last linear.
    """

    arch: str
    class_names: list[str]
    image_size: int = 256
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    width: int = 32
    dropout: float = 0.3

    def __post_init__(self) -> None:
        problems = []
        if self.arch not in ARCHS:
            problems.append(f"arch must be one of {list(ARCHS)}, got {self.arch!r}")
        if isinstance(self.class_names, str) or not isinstance(self.class_names, (list, tuple)):
            problems.append(f"class_names must be a list of strings, got {type(self.class_names).__name__}")
        else:
            self.class_names = list(self.class_names)
            if not self.class_names:
                problems.append("class_names must not be empty")
            elif not all(isinstance(n, str) and n for n in self.class_names):
                problems.append(f"class_names must be non-empty strings, got {self.class_names!r}")
            elif len(set(self.class_names)) != len(self.class_names):
                dup = sorted({n for n in self.class_names if self.class_names.count(n) > 1})
                problems.append(f"class_names must be unique, duplicated: {dup}")
        if not _is_int(self.image_size) or self.image_size < 32:
            problems.append(f"image_size must be an integer >= 32 (five stride-2 stages), got {self.image_size!r}")
        for name in ("mean", "std"):
            value = getattr(self, name)
            if not isinstance(value, (list, tuple)) or len(value) != 3 or not all(_is_number(v) for v in value):
                problems.append(f"{name} must be three numbers (R, G, B), got {value!r}")
            elif name == "std" and not all(v > 0 for v in value):
                problems.append(f"std must be positive, got {value!r}")
            else:
                setattr(self, name, tuple(float(v) for v in value))
        if not _is_int(self.width) or self.width < 1:
            problems.append(f"width must be a positive integer, got {self.width!r}")
        if not _is_number(self.dropout) or not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout must be a number in [0, 1), got {self.dropout!r}")
        if problems:
            raise ValueError("invalid ClassifierConfig: " + "; ".join(problems))
        self.dropout = float(self.dropout)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ClassifierConfig":
        """Build from a ``to_dict()`` result; unknown or missing fields raise ``ValueError``."""
        if not isinstance(d, dict):
            raise ValueError(f"ClassifierConfig must be built from a dict, got {type(d).__name__}")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown ClassifierConfig fields: {unknown} (known: {sorted(names)})")
        missing = [n for n in ("arch", "class_names") if n not in d]
        if missing:
            raise ValueError(f"missing ClassifierConfig fields: {missing}")
        return cls(**d)


# ---------------------------------------------------------------------------------------------
# Compact CNN


class ConvBNReLU(nn.Sequential):
    """conv3x3(stride, no bias) -> BatchNorm -> ReLU."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__(
            nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )


class CompactClassifier(nn.Module):
    """Five stride-2 conv-BN-ReLU stages (``width`` × 1, 1, 2, 4, 8 channels), global average pool,
    dropout, linear. ``[B, 3, S, S]`` normalised images -> logits ``[B, num_classes]``."""

    def __init__(self, num_classes: int, width: int = 32, dropout: float = 0.3):
        super().__init__()
        stages = []
        cin = 3
        for mult in COMPACT_STAGE_MULT:
            stages.append(ConvBNReLU(cin, width * mult, stride=2))
            cin = width * mult
        self.features = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x)).flatten(1)
        return self.head(self.dropout(x))


# ---------------------------------------------------------------------------------------------
# ResNet-18 (torchvision key layout)


class BasicBlock(nn.Module):
    """conv3x3(stride)-BN-ReLU-conv3x3-BN plus identity or 1x1-conv/BN shortcut, then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                nn.BatchNorm2d(cout),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet18(nn.Module):
    """torchvision-layout ResNet-18 trunk with ``fc = Sequential(Dropout, Linear(512, num_classes))``."""

    def __init__(self, num_classes: int, dropout: float = 0.3):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        cin = 64
        for i, (cout, stride) in enumerate(((64, 1), (128, 2), (256, 2), (512, 2)), start=1):
            setattr(self, f"layer{i}", nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)))
            cin = cout
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(nn.Dropout(dropout), nn.Linear(512, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


class ResNet18Classifier(nn.Module):
    """ResNet-18 under ``self.backbone`` (keys ``backbone.*``, as in the DeCo-Diff reference).
    ``[B, 3, S, S]`` normalised images -> logits ``[B, num_classes]``."""

    def __init__(self, num_classes: int, dropout: float = 0.3):
        super().__init__()
        self.backbone = ResNet18(num_classes, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)


def build_classifier(config: ClassifierConfig) -> nn.Module:
    """The (randomly initialised) module described by ``config``."""
    if config.arch == "compact":
        return CompactClassifier(config.num_classes, width=config.width, dropout=config.dropout)
    if config.arch == "resnet18":
        return ResNet18Classifier(config.num_classes, dropout=config.dropout)
    raise ValueError(f"unknown classifier arch {config.arch!r}; expected one of {list(ARCHS)}")


# ---------------------------------------------------------------------------------------------
# Inference wrapper


class CategoryClassifier:
    """Config + module in eval mode: preprocessing and ``(class_name, confidence)`` predictions."""

    def __init__(self, config: ClassifierConfig, module: nn.Module | None = None):
        self.config = config
        self.module = (module if module is not None else build_classifier(config)).eval()

    @property
    def class_names(self) -> list[str]:
        return list(self.config.class_names)

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    def to(self, device: str | torch.device) -> "CategoryClassifier":
        self.module.to(device)
        return self

    def preprocess(self, frames_rgb_uint8: Sequence[np.ndarray]) -> torch.Tensor:
        """``N`` RGB uint8 ``[H, W, 3]`` frames -> normalised float32 ``[N, 3, S, S]`` on the CPU.

        Whole-image PIL BILINEAR resize to ``image_size``² (what torchvision ``Resize`` does on PIL
        images), then ``/255`` and ImageNet-style ``(x - mean) / std``.
        """
        size = self.config.image_size
        out = torch.empty(len(frames_rgb_uint8), 3, size, size, dtype=torch.float32)
        for i, frame in enumerate(frames_rgb_uint8):
            if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
                what = (
                    f"{frame.dtype} array of shape {frame.shape}"
                    if isinstance(frame, np.ndarray)
                    else type(frame).__name__
                )
                raise ValueError(f"frame {i}: expected an RGB uint8 array [H, W, 3], got {what}")
            resized = Image.fromarray(np.ascontiguousarray(frame)).resize((size, size), Image.BILINEAR)
            out[i] = torch.from_numpy(np.asarray(resized, dtype=np.float32)).permute(2, 0, 1)
        mean = torch.tensor(self.config.mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(self.config.std, dtype=torch.float32).view(1, 3, 1, 1)
        return (out / 255.0 - mean) / std

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Preprocessed ``[B, 3, S, S]`` -> logits ``[B, num_classes]`` (float32, on the module's device)."""
        with torch.inference_mode():
            return self.module(x.to(self.device, torch.float32))

    def predict_tensor(self, x: torch.Tensor) -> list[tuple[str, float]]:
        """Preprocessed ``[B, 3, S, S]`` -> ``B`` pairs (argmax class name, its softmax probability)."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected a batch [B, 3, S, S], got shape {tuple(x.shape)}")
        probs = torch.softmax(self.logits(x).float(), dim=1)
        conf, idx = probs.max(dim=1)
        names = self.config.class_names
        return [(names[i], float(c)) for i, c in zip(idx.tolist(), conf.tolist())]

    def predict(self, frames_rgb_uint8: Sequence[np.ndarray]) -> list[tuple[str, float]]:
        """RGB uint8 ``[H, W, 3]`` frames -> one (class name, confidence) per frame."""
        if len(frames_rgb_uint8) == 0:
            return []
        return self.predict_tensor(self.preprocess(frames_rgb_uint8))


# ---------------------------------------------------------------------------------------------
# IO


def _check_state_dict(module: nn.Module, state: dict, source: Path, what: str) -> None:
    """Raise ``ValueError`` naming ``source`` unless ``state`` has exactly ``module``'s keys and shapes."""
    expected = module.state_dict()
    bad_values = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad_values:
        raise ValueError(f"{source}: state dict entries are not tensors: {bad_values[:_SHOW]}")
    mismatch = compare_state_dict(expected, state)
    if not mismatch:
        return
    raise ValueError(
        f"{source}: weights do not fit {what}: " + mismatch.describe(_SHOW, KEY_FORMATS)
        + f". Expected {len(expected)} keys (first: {list(expected)[:_SHOW]}),"
        + f" found {len(state)} keys (first: {list(state)[:_SHOW]})"
    )


def _instantiate(config: ClassifierConfig, state: dict, source: Path) -> CategoryClassifier:
    module = build_classifier(config)
    what = f"a {config.arch!r} classifier with {config.num_classes} classes"
    _check_state_dict(module, state, source, what)
    module.load_state_dict(state, strict=True)
    return CategoryClassifier(config, module)


def save_classifier(clf: CategoryClassifier, folder: str | Path) -> Path:
    """Write ``folder/classifier.json`` (config) and ``folder/classifier.safetensors``; returns ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in clf.module.state_dict().items()}
    save_file(state, str(folder / WEIGHTS_NAME), metadata={"format": "pt", "arch": clf.config.arch})
    (folder / CONFIG_NAME).write_text(json.dumps(clf.config.to_dict(), indent=2) + "\n", encoding="utf-8")
    return folder


def _load_folder(config_path: Path, weights_path: Path) -> CategoryClassifier:
    for p in (config_path, weights_path):
        if not p.is_file():
            raise ValueError(f"{p}: file not found (a classifier folder needs {CONFIG_NAME} and {WEIGHTS_NAME})")
    try:
        raw = json.loads(config_path.read_text(encoding="utf-8"))
        config = ClassifierConfig.from_dict(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError, TypeError) as e:
        raise ValueError(f"{config_path}: not a valid classifier config: {e}") from e
    try:
        state = load_file(str(weights_path), device="cpu")
    except Exception as e:
        raise ValueError(f"{weights_path}: cannot read safetensors weights: {e}") from e
    return _instantiate(config, state, weights_path)


def _class_names_from_map(class_map: object, source: Path) -> list[str]:
    """``{name: id}`` with ids exactly ``0..n-1`` -> names ordered by id."""
    if not isinstance(class_map, dict) or not class_map:
        raise ValueError(f"{source}: class_map must be a non-empty dict name -> id, got {type(class_map).__name__}")
    if not all(isinstance(k, str) and _is_int(v) for k, v in class_map.items()):
        raise ValueError(f"{source}: class_map must map class names (str) to ids (int), got {class_map!r}")
    ids = sorted(class_map.values())
    if ids != list(range(len(class_map))):
        raise ValueError(f"{source}: class_map ids must be exactly 0..{len(class_map) - 1}, found {ids}")
    return [name for name, _ in sorted(class_map.items(), key=lambda kv: kv[1])]


def _unpickling_reason(e: Exception) -> str:
    """The informative line of torch's weights-only refusal (it wraps it in boilerplate)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    for ln in lines:
        if "GLOBAL" in ln or "Unsupported" in ln or "WeightsUnpickler" in ln:
            return ln
    return lines[1] if len(lines) > 2 else (lines[0] if lines else type(e).__name__)


def _load_reference(path: Path) -> CategoryClassifier:
    """DeCo-Diff ``classifier_mvtec.pth``: ``{epoch, model_state_dict, optimizer_state_dict, best_acc, class_map}``."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(
            f"{path}: not a safe weights-only checkpoint: it holds objects that torch.load(weights_only=True) "
            f"refuses to build, so it was not loaded ({_unpickling_reason(e)})"
        ) from e
    except Exception as e:
        raise ValueError(f"{path}: cannot read checkpoint: {type(e).__name__}: {e}") from e
    if not isinstance(ckpt, dict) or "model_state_dict" not in ckpt or "class_map" not in ckpt:
        found = sorted(map(str, ckpt))[:_SHOW * 2] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(
            f"{path}: not a classifier checkpoint: expected a dict with 'model_state_dict' and 'class_map', found {found}"
        )
    state = ckpt["model_state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: model_state_dict must be a dict, got {type(state).__name__}")
    config = ClassifierConfig(arch="resnet18", class_names=_class_names_from_map(ckpt["class_map"], path))
    return _instantiate(config, dict(state), path)


def load_classifier(path: str | Path, device: str | torch.device = "cpu") -> CategoryClassifier:
    """Load our folder (or its ``classifier.json`` / ``classifier.safetensors``) or a reference ``.pth``.

    Raises ``ValueError`` naming the file for anything that is missing, unsafe or does not fit.
    """
    path = Path(path)
    if path.is_dir():
        clf = _load_folder(path / CONFIG_NAME, path / WEIGHTS_NAME)
    elif path.suffix in (".json", ".safetensors"):
        clf = _load_folder(path.with_suffix(".json"), path.with_suffix(".safetensors"))
    elif path.is_file():
        clf = _load_reference(path)
    else:
        raise ValueError(f"{path}: no such classifier file or folder")
    return clf.to(device)
