"""Control-plane messages: JSON, validated by frozen pydantic models with ``extra="forbid"``.

Every model carries ``v`` (the schema version). Decoding goes through :func:`decode`, which maps
every validation failure to :class:`~edge_app.errors.DecodeError` and refuses oversized payloads
before parsing. Tensors never travel here: see ``codec`` for the msgpack data plane.
"""

from __future__ import annotations

import time
from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from edge_app import __version__
from edge_app.errors import DecodeError
from edge_app.messages.topics import ID_PATTERN

SCHEMA_VERSION = 1
MAX_CONTROL_BYTES = 256 * 1024  # a plan for hundreds of devices fits easily

Id = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
Role = Literal["worker", "scheduler", "sensor", "dashboard", "inject", "sink"]
DeviceState = Literal["online", "offline"]
ErrorKind = Literal["decode", "validation", "stale", "shape", "dtype", "size", "runtime", "other"]
Short = Annotated[str, StringConstraints(max_length=256)]
Text = Annotated[str, StringConstraints(max_length=2048)]
NonNeg = Annotated[float, Field(ge=0)]
Count = Annotated[int, Field(ge=0)]


class Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    v: Literal[1] = 1  # SCHEMA_VERSION


# --- devices ---------------------------------------------------------------------------------


class DeviceStatus(Message):
    """Retained on ``status/<device>``; the last will publishes ``state="offline"``."""

    device: Id
    role: Role
    state: DeviceState
    ts: float
    version: Short = ""


class Hardware(Message):
    cpu_model: Short = ""
    cores: Annotated[int, Field(ge=1, le=1024)] = 1
    memory_total: Count = 0  # bytes
    memory_available: Count = 0  # bytes
    temperature_c: float | None = None
    emulated: Short | None = None  # device profile name when the worker emulates one


class StageLoad(Message):
    """What a worker measured for one stage (or shard) it holds."""

    stage: Count
    shard: Count | None = None
    service_time_s: NonNeg  # moving average of compute time per job
    jobs: Count = 0


class SensorHealth(Message):
    captured_fps: NonNeg = 0.0
    sent_fps: NonNeg = 0.0
    skipped: Count = 0
    camera_errors: Count = 0
    source: Short = ""


class Heartbeat(Message):
    device: Id
    role: Role
    seq: Count
    ts: float
    interval_s: Annotated[float, Field(gt=0, le=3600)] = 1.0
    hardware: Hardware = Hardware()
    load: NonNeg = 0.0  # busy fraction of the last interval, 0..1 per worker thread
    queue_depth: Count = 0
    queue_limit: Count = 0
    epoch: Count = 0  # newest plan epoch this device obeys
    stages: Annotated[list[StageLoad], Field(max_length=256)] = []
    speed: Annotated[float, Field(gt=0)] = 1.0  # relative compute speed (1.0 = this host type)
    sensor: SensorHealth | None = None
    versions: Annotated[dict[Short, Short], Field(max_length=32)] = {}


# --- the plan --------------------------------------------------------------------------------


class ModelRef(Message):
    name: Short
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class StageDef(Message):
    """A stage of the model: the tensors it consumes and produces (see inference.partition)."""

    index: Count
    inputs: Annotated[list[Short], Field(min_length=1, max_length=64)]
    outputs: Annotated[list[Short], Field(min_length=1, max_length=64)]
    shardable_layer: Short | None = None


class Replica(Message):
    device: Id
    weight: Annotated[float, Field(gt=0)] = 1.0  # routing weight, relative within the stage


class ShardSeat(Message):
    device: Id
    index: Count  # shard number, 0..k-1
    lo: Count  # rows/channels [lo, hi) of the layer's output
    hi: Count


class StagePlan(Message):
    stage: StageDef
    mode: Literal["replicated", "sharded"]
    replicas: Annotated[list[Replica], Field(max_length=1024)] = []
    shards: Annotated[list[ShardSeat], Field(max_length=256)] = []
    # Devices that merge the shards' partials when this is the last stage; otherwise the
    # partials go to the next stage's replica the fan-out sender picked.
    mergers: Annotated[list[Replica], Field(max_length=256)] = []


class Plan(Message):
    """Retained on ``plan``; only the scheduler writes it, with an increasing epoch."""

    epoch: Count
    ts: float
    scheduler: Id
    model: ModelRef
    stages: Annotated[list[StagePlan], Field(max_length=64)]
    reason: Short = ""


# --- outcomes, errors, metrics ---------------------------------------------------------------


class StageTiming(Message):
    stage: Count
    shard: Count | None = None
    device: Id
    queue_wait_s: NonNeg = 0.0
    compute_s: NonNeg = 0.0
    transfer_s: NonNeg = 0.0


class TopK(Message):
    label: Short
    score: float


DropReason = Literal["deadline", "backpressure", "error", "no_route", "shutdown"]


class JobOutcome(Message):
    """The one terminal state of a job: ``ok`` with a result, or ``dropped`` with a reason."""

    job: Short
    sensor: Id
    seq: Count
    status: Literal["ok", "dropped"]
    reason: DropReason | None = None
    detail: Text = ""
    model: Short = ""
    label: Short | None = None
    score: float | None = None
    topk: Annotated[list[TopK], Field(max_length=32)] = []
    created_ts: float
    done_ts: float
    latency_s: NonNeg = 0.0
    epoch: Count = 0
    stages: Annotated[list[StageTiming], Field(max_length=256)] = []
    # The whole output vector (flattened) when small enough, so results can be checked exactly.
    output: Annotated[list[float], Field(max_length=4096)] | None = None


class ErrorReport(Message):
    device: Id
    ts: float
    topic: Short
    kind: ErrorKind
    detail: Text


class Metrics(Message):
    """Accounting counters; at rest ``accepted == completed + sum(dropped.values())``."""

    device: Id
    role: Role
    ts: float
    accepted: Count = 0
    completed: Count = 0
    dropped: Annotated[dict[DropReason, Count], Field(max_length=16)] = {}
    resent: Count = 0
    errors: Count = 0
    duplicates: Count = 0


# --- encoding --------------------------------------------------------------------------------

M = TypeVar("M", bound=Message)


def encode(message: Message) -> bytes:
    return message.model_dump_json(exclude_defaults=False).encode()


def status_payload(device: str, role: Role, state: DeviceState) -> bytes:
    """This process's retained status (or its last will), stamped now with the package version."""
    status = DeviceStatus(
        device=device, role=role, state=state, ts=time.time(), version=__version__
    )
    return encode(status)


def decode(kind: type[M], payload: bytes) -> M:
    """Validate ``payload`` as ``kind``; every failure becomes a DecodeError with the reason."""
    if len(payload) > MAX_CONTROL_BYTES:
        raise DecodeError(
            f"{kind.__name__}: payload of {len(payload)} bytes exceeds {MAX_CONTROL_BYTES}"
        )
    try:
        return kind.model_validate_json(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "message"
        raise DecodeError(
            f"invalid {kind.__name__}: {where}: {first.get('msg', 'invalid')}"
            f" ({exc.error_count()} error(s))"
        ) from None
    except (ValueError, UnicodeDecodeError) as exc:  # defensive: non-UTF-8, deep nesting
        raise DecodeError(f"invalid {kind.__name__}: {exc}") from None
