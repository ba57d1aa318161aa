"""Find a model and its card by name or path.

``resolve_model`` accepts, in this order:

- a path: a model folder (with ``card.json``), a card (``*.json``), or a ``.tflite`` file (its
  card is ``card.json`` beside it naming that file, or ``<stem>.json``; a file without a card
  gets a default card read from its input tensor, so third-party models work for splitting);
- a name of a folder ``<name>/card.json`` under the ``$EDGE_APP_MODELS`` folders
  (``os.pathsep``-separated) or the source tree's ``models/``;
- a zoo name (``alexnet``, ``vgg16_int8``...), optionally ``NAME:small``, built into the cache.

Cards loaded from disk are checked against their model file's sha256.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from edge_app.errors import ModelError
from edge_app.inference import zoo
from edge_app.inference.card import (
    InputQuantization,
    InputSpec,
    ModelCard,
    check_model_file,
    load_card,
)
from edge_app.inference.graph import Model, Tensor
from edge_app.inference.graph_io import read_model

CARD_NAME = "card.json"
REPO_MODELS = Path(__file__).resolve().parents[2] / "models"
MAX_MODEL_BYTES = 2**31 - 1


def model_dirs() -> list[Path]:
    """Folders searched for ``<name>/card.json``: ``$EDGE_APP_MODELS`` first, then the repo's."""
    env = os.environ.get("EDGE_APP_MODELS", "")
    dirs = [Path(p) for p in env.split(os.pathsep) if p]
    return [*dirs, REPO_MODELS]


def list_models() -> list[str]:
    """Names resolve_model accepts: carded models found in model_dirs(), then the zoo."""
    names: list[str] = []
    for folder in model_dirs():
        if folder.is_dir():
            names += sorted(p.parent.name for p in folder.glob(f"*/{CARD_NAME}"))
    zoo_names = [n for base in zoo.ZOO_NAMES for n in (base, f"{base}:small")]
    return list(dict.fromkeys(names + zoo_names))


def _from_card(card_path: Path) -> tuple[ModelCard, Path]:
    card = load_card(card_path)
    model_path = card_path.parent / card.file
    check_model_file(card, model_path)
    check_card_fits(card, read_model(model_path.read_bytes()), card_path)
    return card, model_path


def check_card_fits(card: ModelCard, graph: Model, where: Path) -> None:
    """ModelError unless the card's input and labels agree with the model's tensors."""
    sg = graph.main
    tin, tout = sg.tensors[sg.inputs[0]], sg.tensors[sg.outputs[0]]
    problems = []
    if tuple(tin.shape) != tuple(card.input.shape):
        problems.append(f"input shape {tuple(card.input.shape)} but the model takes {tin.shape}")
    if np.dtype(tin.dtype).name != card.input.dtype:
        problems.append(f"input dtype {card.input.dtype} but the model takes {tin.dtype}")
    if tout.shape and tout.shape[-1] != len(card.labels):
        problems.append(f"{len(card.labels)} labels but the model has {tout.shape[-1]} outputs")
    if problems:
        raise ModelError(f"card {where} does not match its model: {'; '.join(problems)}")


def _from_model_file(path: Path) -> tuple[ModelCard, Path]:
    beside = path.parent / CARD_NAME
    if beside.is_file() and load_card(beside).file == path.name:
        return _from_card(beside)
    own = path.with_suffix(".json")
    if own.is_file():
        return _from_card(own)
    return default_card(path, path.stem), path


def resolve_model(name_or_path: str) -> tuple[ModelCard, Path]:
    """The card and model file for a path, a model folder name, or a zoo name."""
    path = Path(name_or_path)
    if path.is_dir():
        return _from_card(path / CARD_NAME)
    if path.is_file():
        return _from_card(path) if path.suffix == ".json" else _from_model_file(path)
    if "/" not in name_or_path and os.sep not in name_or_path:
        for folder in model_dirs():
            if (folder / name_or_path / CARD_NAME).is_file():
                return _from_card(folder / name_or_path / CARD_NAME)
    base, _, size = name_or_path.partition(":")
    if base in zoo.ZOO_NAMES and size in ("", "small"):
        model_path = zoo.cached_build(base, small=size == "small")
        return default_card(model_path, name_or_path), model_path
    searched = ", ".join(map(str, model_dirs()))
    raise ModelError(
        f"no model {name_or_path!r}: not a file or folder, not in {searched}"
        f", not a zoo name ({', '.join(zoo.ZOO_NAMES)}, optionally NAME:small)"
    )


def default_card(model_path: Path, name: str) -> ModelCard:
    """A card for a model that has none, from its first input and output tensors.

    Assumed: RGB (or GRAY for one channel), stretch resize, pixels mapped to [-1, 1], labels
    ``class_0``..; an input of rank 5 means clips (an action model).
    """
    try:
        size = model_path.stat().st_size
        if size > MAX_MODEL_BYTES:
            raise ModelError(f"model file {model_path} is too large ({size} bytes)")
        data = model_path.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read model file {model_path}: {exc.strerror or exc}") from exc
    sg = read_model(data).main
    tin, tout = sg.tensors[sg.inputs[0]], sg.tensors[sg.outputs[0]]
    spec = _default_input(model_path, tin)
    clip = tin.shape[1] if spec.layout == "NDHWC" else None
    classes = tout.shape[-1] if tout.shape else 1
    return ModelCard(
        name=name.replace("/", "_")[:64] or "model",
        task="image" if clip is None else "action",
        file=model_path.name,
        sha256=hashlib.sha256(data).hexdigest(),
        labels=tuple(f"class_{i}" for i in range(classes)),
        input=spec,
        frames_per_clip=clip,
        clip_stride=clip,
        description="default card (the model came without one): colour order, resize and "
        "normalization are assumptions",
    )


def _default_input(model_path: Path, tin: Tensor) -> InputSpec:
    """The assumed input of a card-less model: an NHWC image or NDHWC clip, 1 or 3 channels."""
    rank, dtype = len(tin.shape), np.dtype(tin.dtype).name
    if (
        rank not in (4, 5)
        or tin.shape[-1] not in (1, 3)
        or dtype not in ("float32", "int8", "uint8")
    ):
        raise ModelError(
            f"model {model_path} has no card and its input {tin.shape} {dtype} is not an "
            "NHWC image or NDHWC clip of 1 or 3 channels: write a card for it"
        )
    quant = None
    if dtype != "float32":
        if tin.quantization is None or tin.quantization.scale.size != 1:
            raise ModelError(f"model {model_path}: quantized input without one scale")
        q = tin.quantization
        quant = InputQuantization(scale=float(q.scale[0]), zero_point=int(q.zero_point[0]))
    return InputSpec(
        shape=tuple(tin.shape),
        dtype=dtype,  # type: ignore[arg-type]  # checked above
        layout="NDHWC" if rank == 5 else "NHWC",
        colour_order="GRAY" if tin.shape[-1] == 1 else "RGB",
        mean=(127.5,),
        std=(127.5,),
        quantization=quant,
    )
