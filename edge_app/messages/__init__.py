"""Wire layer: topics, control-plane schemas and the tensor codec. No I/O here."""
