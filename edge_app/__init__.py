"""edge-app: real-time recognition on a fleet of small devices, pooled over MQTT."""

__version__ = "0.1.0"
