"""The one exception type a stage's user sees as a plain message instead of a traceback."""


class PipelineError(Exception):
    """Bad input or a failed step; the message says what, where, and how to fix it."""
