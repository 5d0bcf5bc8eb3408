"""The one exception type a user ever sees.

Anything the user can fix (a bad path, a bad config value, a model directory that does not
fit) raises `UserError`. The CLI prints its message on one line and exits with code 2; every
other exception is a bug in lmsmith and keeps its traceback.
"""


class UserError(Exception):
    """A mistake in the user's input, with a message that names the problem and the fix."""

    exit_code = 2
