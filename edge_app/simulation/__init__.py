"""A discrete-event simulator of a fleet running the real planner and the real routing policy."""
