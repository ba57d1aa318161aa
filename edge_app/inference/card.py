"""The model card: what a sensor must do to a picture before the model sees it, and what comes out.

A model is a ``.tflite`` file plus this card (JSON, next to the file). The card says the task,
the labels, the input tensor (shape, dtype, layout), how frames are prepared (colour order,
resize mode, normalization, int8 quantization), the clip length for action models, and where the
accuracy figure comes from. Pixels reach the model as::

    real = (pixel - mean[c]) / std[c]          # pixel in 0..255, channels in ``colour_order``
    q = clip(round(real / scale) + zero_point)  # only when the input dtype is int8 / uint8
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edge_app.errors import ModelError

CARD_SCHEMA_VERSION: Literal[1] = 1
MAX_CARD_BYTES = 1 << 20


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputQuantization(_Frozen):
    """Affine quantization of the input tensor: real = scale * (q - zero_point)."""

    scale: float = Field(gt=0)
    zero_point: int = Field(ge=-128, le=255)


class InputSpec(_Frozen):
    shape: tuple[int, ...] = Field(min_length=4, max_length=5)
    dtype: Literal["float32", "int8", "uint8"] = "float32"
    layout: Literal["NHWC", "NDHWC"] = "NHWC"
    colour_order: Literal["RGB", "BGR", "GRAY"] = "RGB"
    resize: Literal["stretch", "crop", "letterbox"] = "stretch"
    mean: tuple[float, ...] = Field(default=(0.0,), min_length=1)
    std: tuple[float, ...] = Field(default=(255.0,), min_length=1)
    quantization: InputQuantization | None = None

    @property
    def height(self) -> int:
        return self.shape[-3]

    @property
    def width(self) -> int:
        return self.shape[-2]

    @property
    def channels(self) -> int:
        return self.shape[-1]

    @model_validator(mode="after")
    def _consistent(self) -> InputSpec:
        if any(d < 1 for d in self.shape):
            raise ValueError(f"input shape {self.shape} has a dimension < 1")
        if len(self.shape) != len(self.layout):
            raise ValueError(f"layout {self.layout} does not fit input shape {self.shape}")
        want = 1 if self.colour_order == "GRAY" else 3
        if self.channels != want:
            raise ValueError(f"colour order {self.colour_order} needs {want} channels")
        for name, values in (("mean", self.mean), ("std", self.std)):
            if len(values) not in (1, self.channels):
                raise ValueError(f"{name} needs 1 or {self.channels} values, got {len(values)}")
        if any(s <= 0 for s in self.std):
            raise ValueError("std values must be > 0")
        if (self.dtype != "float32") != (self.quantization is not None):
            raise ValueError(f"input dtype {self.dtype}: quantization is required iff not float")
        return self


class Accuracy(_Frozen):
    value: float = Field(ge=0, le=1)
    samples: int = Field(ge=1)
    held_out: str = Field(min_length=1, description="how the held-out set was made")


class ModelCard(_Frozen):
    schema_version: Literal[1] = CARD_SCHEMA_VERSION
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
    task: Literal["image", "action"]
    file: str = Field(min_length=1, description="model file name, relative to the card")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    labels: tuple[str, ...] = Field(min_length=1)
    input: InputSpec
    frames_per_clip: int | None = Field(default=None, ge=1)
    clip_stride: int | None = Field(default=None, ge=1)
    frame_rate: float | None = Field(default=None, gt=0, description="fps clips were made at")
    accuracy: Accuracy | None = None
    reproduce: str | None = None
    description: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> ModelCard:
        if len(set(self.labels)) != len(self.labels):
            raise ValueError("labels must be unique")
        if "/" in self.file or "\\" in self.file or self.file in (".", ".."):
            raise ValueError(f"file must be a plain file name, got {self.file!r}")
        if self.task == "action":
            if self.input.layout != "NDHWC":
                raise ValueError("an action model takes clips: layout NDHWC")
            if self.frames_per_clip != self.input.shape[1]:
                raise ValueError("frames_per_clip must equal the input's depth dimension")
        elif self.input.layout != "NHWC" or self.frames_per_clip is not None:
            raise ValueError("an image model takes NHWC frames and no frames_per_clip")
        return self


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_card(path: Path | str) -> ModelCard:
    """Read and validate a card; any problem is a ModelError naming the file."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_CARD_BYTES:
            raise ModelError(f"model card {path} is larger than {MAX_CARD_BYTES} bytes")
        return ModelCard.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except OSError as exc:
        raise ModelError(f"cannot read model card {path}: {exc.strerror or exc}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"model card {path} is not JSON: {exc}") from exc
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'card'}: {e['msg']}" for e in exc.errors()
        )
        raise ModelError(f"model card {path} is invalid: {problems}") from exc


def write_card(card: ModelCard, path: Path | str) -> None:
    """Write a card as stable, human-readable JSON."""
    text = json.dumps(card.model_dump(mode="json"), indent=2) + "\n"
    Path(path).write_text(text, encoding="utf-8")


def check_model_file(card: ModelCard, model_path: Path) -> None:
    """Raise ModelError unless ``model_path`` is the file the card describes (by sha256)."""
    try:
        actual = sha256_file(model_path)
    except OSError as exc:
        raise ModelError(f"cannot read model file {model_path}: {exc.strerror or exc}") from exc
    if actual != card.sha256:
        raise ModelError(
            f"model file {model_path} does not match card {card.name!r}: "
            f"sha256 {actual[:12]}... != {card.sha256[:12]}..."
        )
