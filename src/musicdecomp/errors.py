"""User-facing errors: bad input or parameters, reported as one line that names the file and the fix."""


class UserError(Exception):
    """An error the user can fix (a missing file, a bad checksum, an out-of-range parameter).

    The CLI prints its message on one line and exits with status 2, without a traceback.
    """
