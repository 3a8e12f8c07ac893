"""Training loops, losses, checkpoints and feature networks."""
