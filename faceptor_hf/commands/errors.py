"""The error type of the command line: a user mistake that ``faceptor-hf`` reports in one line."""


class CommandError(Exception):
    """A problem the user can fix (a wrong option, a missing model or path); ``main`` prints ``error: <message>``
    without a traceback and exits with status 2."""
