"""The one exception type that the CLI turns into a one-line message and exit code 2."""


class AdabertError(Exception):
    """A problem with the user's input (a file, a config field, a path, a number).

    The message must name the file, line or field and say what was expected; the CLI prints it on one line
    without a traceback and exits with code 2.
    """
