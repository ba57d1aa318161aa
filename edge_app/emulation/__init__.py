"""Emulated devices: profiles of real boards, the work of a model per operator kind, the host's
own speed, and the emulator that makes a worker on this host behave like a profiled board."""
