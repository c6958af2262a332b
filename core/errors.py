"""The one exception type the command line and the app turn into a one-line message."""


class AttendError(Exception):
    """A user-facing error: bad input, a missing file, a wrong checkpoint.

    The CLI prints ``attend: error: <message>`` and exits non-zero; the app shows the
    message. Anything else escaping is a bug and keeps its traceback.
    """
