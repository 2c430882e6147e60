"""The one exception type the command-line tool turns into a clean message instead of a traceback."""


class SonosegError(Exception):
    """An error caused by the user's input (a file, a config key); its message says what to do."""
