"""The one mark of a user's mistake.

``UsageError`` is raised for what the user gave wrong (an option, a path, a
model file, a value in params.yaml): its message names the thing, says what
was expected and what to do. The commands (``flows/commands``) print it as
one line, ``<command>: error: <message>``, and exit with status 2; any other
exception is a fault of the run, not of its input.
"""


class UsageError(ValueError):
    """A mistake in what the user gave; the message names it and says what to do."""
