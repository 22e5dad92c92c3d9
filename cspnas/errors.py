"""User-facing errors: the CLI prints their message as one line and exits with code 2."""


class CspnasError(Exception):
    """A problem with the user's input that they can fix; the message says what and how."""


class ArchError(CspnasError, ValueError):
    """An architecture description is invalid; the message starts with the offending field path."""


class DiskFullError(CspnasError):
    """A write failed for lack of space (ENOSPC/EDQUOT); freeing space and re-running fixes it."""
