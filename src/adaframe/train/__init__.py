"""Training: the configuration and presets, the loop of every model kind, the resumable state."""
