"""Error types that the CLI reports as one line; kept free of heavy imports so `qru ls` starts fast."""


class UnlearnError(ValueError):
    """Unlearning cannot start with this data or configuration."""


class CheckpointError(ValueError):
    """A checkpoint or adapter cannot be read or does not match the other side; the message names the path."""
