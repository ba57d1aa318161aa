"""resolve_model: paths, folders, cards, $EDGE_APP_MODELS names and zoo names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_app.errors import ModelError
from edge_app.inference import catalog, zoo
from edge_app.inference.card import write_card
from edge_app.inference.interpreter import Runner
from edge_app.sensors import patterns
from edge_app.sensors.preprocess import FramePreprocessor


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """A folder ``tiny/`` holding a zoo model and its default card, as a user would lay it out."""
    folder = tmp_path / "tiny"
    folder.mkdir()
    model = folder / "tiny.tflite"
    model.write_bytes(zoo.build("resnet_branch", small=True))
    write_card(catalog.default_card(model, "tiny"), folder / "card.json")
    return folder


def test_default_card_reads_the_input(tmp_path: Path) -> None:
    path = tmp_path / "clip.tflite"
    path.write_bytes(zoo.build("c3d", small=True))
    card = catalog.default_card(path, "clip")
    assert card.task == "action"
    assert card.input.shape == (1, 8, 32, 32, 3)
    assert card.input.layout == "NDHWC"
    assert card.frames_per_clip == 8
    assert len(card.labels) == 10


def test_resolve_paths(model_dir: Path) -> None:
    model = model_dir / "tiny.tflite"
    for target in (model_dir, model_dir / "card.json", model):
        card, path = catalog.resolve_model(str(target))
        assert card.name == "tiny"
        assert path == model


def test_model_without_card(tmp_path: Path) -> None:
    path = tmp_path / "mine.tflite"
    path.write_bytes(zoo.build("alexnet", small=True))
    card, resolved = catalog.resolve_model(str(path))
    assert resolved == path
    assert card.input.shape == (1, 64, 64, 3)
    assert "default card" in card.description


def test_resolve_by_name(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_APP_MODELS", str(model_dir.parent))
    _, path = catalog.resolve_model("tiny")
    assert path == model_dir / "tiny.tflite"
    assert "tiny" in catalog.list_models()


def test_resolve_zoo_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_APP_CACHE", str(tmp_path))
    card, path = catalog.resolve_model("vgg16:small")
    assert path.parent == tmp_path / "zoo"
    assert card.input.shape == (1, 32, 32, 3)
    assert card.name == "vgg16:small"


def test_hash_mismatch(model_dir: Path) -> None:
    (model_dir / "tiny.tflite").write_bytes(zoo.build("resnet_branch", small=True, seed=5))
    with pytest.raises(ModelError, match="does not match"):
        catalog.resolve_model(str(model_dir))


def test_unknown_and_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no model 'nothing-here'"):
        catalog.resolve_model("nothing-here")
    with pytest.raises(ModelError, match="no model"):
        catalog.resolve_model("alexnet:huge")
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"this is not a flatbuffer at all")
    with pytest.raises(ModelError, match="TFLite"):
        catalog.resolve_model(str(junk))
    with pytest.raises(ModelError, match="card"):
        catalog.resolve_model(str(tmp_path))  # a folder without card.json


# --- the committed models on freshly generated data ------------------------------------------
FRESH_SEED = 20261128  # neither a training nor the card's held-out seed
CAMERA_SIZES = ((120, 160), (240, 320))


def _fresh_accuracy(name: str, per_class: int) -> float:
    card, path = catalog.resolve_model(name)  # by name: the repo's models/, hash checked
    runner = Runner(path)
    prepare = FramePreprocessor(card.input)
    rng = np.random.default_rng(FRESH_SEED)
    hits = total = 0
    for i in range(per_class):
        for index, label in enumerate(card.labels):
            height, width = CAMERA_SIZES[(i + index) % len(CAMERA_SIZES)]
            if card.task == "action":
                fps = card.frame_rate or 15.0
                frames = patterns.render_clip(
                    label, card.frames_per_clip or 1, height, width, rng, fps=fps
                )
                x = np.stack([prepare(f) for f in frames])
            else:
                x = prepare(patterns.render_shape(label, height, width, rng))
            (probs,) = runner.run(x[None]).values()
            hits += int(np.argmax(probs[0]) == index)
            total += 1
    return hits / total


@pytest.mark.interpreter
@pytest.mark.parametrize(("name", "per_class"), [("shapes", 30), ("shapes_int8", 30)])
def test_image_models_hold_their_accuracy(name: str, per_class: int) -> None:
    assert _fresh_accuracy(name, per_class) >= 0.95


@pytest.mark.interpreter
@pytest.mark.slow
def test_action_model_holds_its_accuracy() -> None:
    assert _fresh_accuracy("actions", 25) >= 0.95


def test_a_card_that_does_not_fit_its_model_is_a_clear_error(tmp_path: Path) -> None:
    import json
    import shutil

    from edge_app.errors import ModelError
    from edge_app.inference.catalog import resolve_model

    src = Path(__file__).resolve().parents[3] / "models" / "shapes"
    folder = tmp_path / "shapes"
    shutil.copytree(src, folder)
    card = json.loads((folder / "card.json").read_text())
    card["input"]["shape"] = [1, 48, 48, 3]
    card["labels"] = card["labels"][:5]
    (folder / "card.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match=r"does not match its model: input shape.*5 labels"):
        resolve_model(str(folder))
