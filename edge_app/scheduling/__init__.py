"""Pure scheduling: device registry state and the planner (no I/O)."""
