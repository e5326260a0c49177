"""Small helpers shared by every layer: time, durations, imports. No mape imports above this package."""
