"""User-facing errors: the CLI prints their message as one line and exits with code 2."""


class CspnasError(Exception):
    """A problem with the user's input that they can fix; the message says what and how."""


class ArchError(CspnasError, ValueError):
    """An architecture description is invalid; the message starts with the offending field path."""


class Interrupted(CspnasError):
    """The user stopped a command with a signal; the CLI exits 128 + its number (130 Ctrl-C, 143 SIGTERM)."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum
