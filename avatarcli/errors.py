"""The one exception type users see.

Anything that is the user's to fix (a missing file, a wrong shape, an option out of range)
raises :class:`AvatarError` with a one-line message; the CLI prints it and exits with code 2.
"""

from __future__ import annotations


class AvatarError(Exception):
    """A problem with the user's input, reported as one line without a traceback."""

    exit_code = 2
