"""Broker message limits matched to the models the fleet runs.

The biggest MQTT payload is one activation (a stage's input or output tensor: frames, a clip,
a feature map) in a msgpack envelope. Constant tensors (weights) never travel, so the largest
non-constant tensor of every deployed model, plus room for the envelope header, bounds it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_app.errors import ConfigError, ModelError
from edge_app.inference.graph_io import read_model
from edge_app.provision.fleet import FleetFile

HEADER_ROOM = 64 * 1024  # envelope header, trace records, several tensor entries
ROUND_TO = 64 * 1024
MIN_LIMIT = 128 * 1024


def largest_activation_bytes(path: Path) -> int:
    """Bytes of the largest non-constant tensor in a ``.tflite`` file."""
    try:
        model = read_model(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"cannot read model {path}: {exc.strerror or exc}") from exc
    except ModelError as exc:
        raise ConfigError(f"model {path}: {exc}") from exc
    largest = 0
    for sg in model.subgraphs:
        for t in sg.tensors:
            if model.buffers[t.buffer] or any(d < 0 for d in t.shape):
                continue
            size = int(np.prod(t.shape, dtype=np.int64)) * t.dtype.itemsize
            largest = max(largest, size)
    return largest


def message_limit_for_models(paths: list[Path]) -> int:
    """A ``message_size_limit`` that lets every activation of these models through."""
    largest = max((largest_activation_bytes(p) for p in paths), default=0)
    limit = largest + max(HEADER_ROOM, largest // 50)
    return max(MIN_LIMIT, -(-limit // ROUND_TO) * ROUND_TO)


def with_message_limit(
    fleet: FleetFile, models: list[Path] | None = None, explicit: int | None = None
) -> FleetFile:
    """The fleet with its effective ``message_size_limit``.

    Precedence: ``explicit`` (command line), then a limit set in the fleet file, then the
    largest activation of ``models`` plus the fleet file's ``broker.models``, then the default.
    """
    broker = fleet.broker
    paths = [*(models or []), *(Path(p) for p in broker.models)]
    if explicit is not None:
        limit = explicit
    elif "message_size_limit" in broker.model_fields_set or not paths:
        return fleet
    else:
        limit = message_limit_for_models(paths)
    data = {**broker.model_dump(), "message_size_limit": limit}
    try:
        new_broker = type(broker).model_validate(data)
    except ValueError as exc:
        raise ConfigError(f"message size limit {limit}: {exc}") from exc
    return fleet.model_copy(update={"broker": new_broker})
