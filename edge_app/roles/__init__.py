"""Processes of the fleet (sensor, worker, scheduler, sink): wiring of the lower layers."""
