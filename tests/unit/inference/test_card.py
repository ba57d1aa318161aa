"""Model cards: validation rules, file round trip and clear errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from edge_app.errors import ModelError
from edge_app.inference.card import ModelCard, check_model_file, load_card, sha256_file, write_card


def _card(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "shapes",
        "task": "image",
        "file": "shapes.tflite",
        "sha256": "0" * 64,
        "labels": ["a", "b"],
        "input": {"shape": [1, 32, 32, 3], "mean": [127.5], "std": [127.5]},
    }
    data.update(changes)
    return data


def test_minimal_image_card_and_defaults() -> None:
    card = ModelCard.model_validate(_card())
    assert card.schema_version == 1
    assert (card.input.height, card.input.width, card.input.channels) == (32, 32, 3)
    assert card.input.colour_order == "RGB"
    assert card.input.resize == "stretch"


def test_action_card() -> None:
    spec = {"shape": [1, 8, 48, 48, 3], "layout": "NDHWC"}
    card = ModelCard.model_validate(
        _card(task="action", input=spec, frames_per_clip=8, clip_stride=4, frame_rate=15)
    )
    assert card.input.height == 48
    assert card.frames_per_clip == 8


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"colour": "RGB"}, "Extra inputs"),
        ({"schema_version": 2}, "schema_version"),
        ({"task": "audio"}, "task"),
        ({"sha256": "xyz"}, "sha256"),
        ({"labels": []}, "labels"),
        ({"labels": ["a", "a"]}, "unique"),
        ({"file": "../evil.tflite"}, "plain file name"),
        ({"frames_per_clip": 8}, "no frames_per_clip"),
        ({"input": {"shape": [1, 32, 32, 1]}}, "needs 3 channels"),
        ({"input": {"shape": [1, 32, 32, 3], "std": [0.0]}}, "std"),
        ({"input": {"shape": [1, 32, 32, 3], "mean": [1.0, 2.0]}}, "mean needs"),
        ({"input": {"shape": [1, 32, 32, 3], "dtype": "int8"}}, "quantization is required"),
        ({"input": {"shape": [1, 8, 32, 32, 3], "layout": "NHWC"}}, "layout"),
        ({"task": "action", "input": {"shape": [1, 8, 9, 9, 3], "layout": "NDHWC"}}, "frames_per"),
        ({"accuracy": {"value": 1.5, "samples": 10, "held_out": "x"}}, "accuracy"),
    ],
)
def test_invalid_cards(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ModelCard.model_validate(_card(**changes))


def test_int8_input() -> None:
    spec = {
        "shape": [1, 32, 32, 3],
        "dtype": "int8",
        "quantization": {"scale": 0.01, "zero_point": -3},
    }
    card = ModelCard.model_validate(_card(input=spec))
    assert card.input.quantization is not None
    assert card.input.quantization.zero_point == -3


def test_round_trip_and_hash(tmp_path: Path) -> None:
    model = tmp_path / "shapes.tflite"
    model.write_bytes(b"pretend model")
    card = ModelCard.model_validate(_card(sha256=sha256_file(model)))
    write_card(card, tmp_path / "card.json")
    assert load_card(tmp_path / "card.json") == card
    check_model_file(card, model)
    model.write_bytes(b"another model")
    with pytest.raises(ModelError, match="does not match"):
        check_model_file(card, model)
    with pytest.raises(ModelError, match="cannot read model file"):
        check_model_file(card, tmp_path / "missing.tflite")


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "card.json"
    with pytest.raises(ModelError, match="cannot read model card"):
        load_card(path)
    path.write_text("{not json")
    with pytest.raises(ModelError, match="not JSON"):
        load_card(path)
    path.write_text(json.dumps(_card(task="audio")))
    with pytest.raises(ModelError, match=r"card.json is invalid: task"):
        load_card(path)
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(ModelError, match="not JSON"):
        load_card(path)


# --- the committed models ------------------------------------------------------------------
COMMITTED = ("shapes", "shapes_int8", "actions")
MODELS = Path(__file__).resolve().parents[3] / "models"


@pytest.mark.parametrize("name", COMMITTED)
def test_committed_card_matches_its_file(name: str) -> None:
    card = load_card(MODELS / name / "card.json")
    assert card.name == name
    check_model_file(card, MODELS / name / card.file)
    assert (MODELS / name / card.file).stat().st_size < 5 * 2**20
    assert card.accuracy is not None
    assert card.accuracy.value >= 0.95
    assert card.reproduce is not None
    assert card.reproduce.split()[-1] == f"models/train_{name.removesuffix('_int8')}.py"
