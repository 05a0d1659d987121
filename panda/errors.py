"""User-facing errors: the CLI prints these as one line, never as a traceback."""


class PandaError(Exception):
    """Bad input or configuration. The message names the file or key and says how to fix it."""
