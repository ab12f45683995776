"""Error types that the CLI reports as one line; kept free of heavy imports so `qru ls` starts fast."""


class UnlearnError(ValueError):
    """Unlearning cannot start with this data or configuration."""


class CheckpointError(ValueError):
    """A checkpoint or adapter cannot be read or does not match the other side; the message names the path."""


class ModelLoadError(ValueError):
    """A model cannot be loaded (missing folder or package, hub unreachable and nothing cached); names the model."""


class ResultImportError(ValueError):
    """Another tool's result cannot be imported; the message names the file and what is wrong."""


class JobCancelled(KeyboardInterrupt):
    """``qru cancel`` stopped this job (qru.queue): a KeyboardInterrupt, so every writer cleans up as on Ctrl-C, and
    the run it was computing is recorded as cancelled."""
