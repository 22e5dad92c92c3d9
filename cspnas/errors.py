"""User-facing errors: the CLI prints their message as one line and exits with code 2."""


class CspnasError(Exception):
    """A problem with the user's input that they can fix; the message says what and how."""


class ArchError(CspnasError, ValueError):
    """An architecture description is invalid; the message starts with the offending field path.

    Code that reacts to the problem (the search space's repair) reads `code` (one of
    `cspnas.space.arch.Code`), `field` (the field path, e.g. "stages[2].groups") and `stage`
    (the stage index, or None), never the message.
    """

    def __init__(self, message: str, *, code: str = "invalid", field: str | None = None,
                 stage: int | None = None):
        super().__init__(message)
        self.code, self.field, self.stage = code, field, stage


class Interrupted(CspnasError):
    """The user stopped a command with a signal; the CLI exits 128 + its number (130 Ctrl-C, 143 SIGTERM)."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


class DiskFullError(CspnasError):
    """A write failed for lack of space (ENOSPC/EDQUOT); freeing space and re-running fixes it."""
