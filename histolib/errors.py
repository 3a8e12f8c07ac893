"""The exception types a user of the study sees.

Bad user input raises one family of exceptions with a readable message that names the file,
key or argument at fault (the habit of NVlabs/stylegan2-ada-pytorch's ``UserError``).
"""


class HistolibError(Exception):
    """Base class of every error histolib raises on purpose."""


class ParamError(HistolibError, ValueError):
    """An unknown parameter key, a value of the wrong type, or a value out of range."""


class DataError(HistolibError, ValueError):
    """Unreadable image, image/mask size mismatch, mask values outside the classes, empty folder."""


class TrainingDiverged(HistolibError, RuntimeError):
    """A loss became NaN or infinite; the last good checkpoint is kept on disk."""


class CheckpointError(HistolibError, RuntimeError):
    """A checkpoint or completion record that cannot be read or trusted; the message names the file."""
