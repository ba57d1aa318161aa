"""The exception hierarchy of edge-app, drawn in one place.

    EdgeAppError                 anything edge-app raises on purpose
    ├── ConfigError              bad configuration or command-line values
    ├── ModelError               a model file or card that cannot be used
    │   ├── GraphError           not a TFLite flatbuffer, or a graph we cannot read/write
    │   └── PartitionError       an invalid cut point, an unsplittable operator, k too large
    ├── InterpreterError         the TFLite runtime failed, or inputs of the wrong dtype/shape
    ├── WireError                a message from the network that fails validation
    │   ├── DecodeError          malformed bytes, unknown version, wrong dtype/shape/size
    │   └── StaleError           a message of an older plan epoch
    ├── TransportError           the broker cannot be reached or refused us
    └── SourceError              a frame source (camera, video, images) that fails

Code at a process boundary catches ``EdgeAppError`` subclasses, logs them, counts them on the
error topic and goes on; anything else is a bug.
"""


class EdgeAppError(Exception):
    """Base of every error edge-app raises on purpose."""


class ConfigError(EdgeAppError):
    """Bad configuration or command-line values."""


class ModelError(EdgeAppError):
    """A model file or model card that cannot be used."""


class GraphError(ModelError):
    """Not a TFLite flatbuffer, or a graph we cannot read or write."""


class PartitionError(ModelError):
    """An invalid cut, an operator that cannot be split, or too many shards."""


class InterpreterError(EdgeAppError):
    """The TFLite runtime failed, or was given inputs of the wrong dtype or shape."""


class WireError(EdgeAppError):
    """A message from the network that fails validation."""


class DecodeError(WireError):
    """Malformed bytes, an unknown version, or a tensor of the wrong dtype, shape or size."""


class StaleError(WireError):
    """A message that belongs to an older plan epoch."""


class TransportError(EdgeAppError):
    """The broker cannot be reached, or refused us."""


class SourceError(EdgeAppError):
    """A frame source (camera, video file, image folder) that fails."""
