"""The exceptions that report a user mistake.

:class:`UsageError` is a mistake of whoever runs a script or calls the
library: a bad flag, model name, setting, file or data set. Its message is
one line saying what to do. It is a ``ValueError``, so code that catches
``ValueError`` keeps working. The command-line scripts print a
``UsageError`` as one line, ``<script>: error: <message>``, with exit code 2
(:func:`kdkeras.cli.run`); any other exception is an internal error and is
shown with a short traceback and exit code 1.

:class:`MissingFileError` and :class:`NotWritableError` are the same kind of
mistake about a path, and are also a ``FileNotFoundError`` and a
``PermissionError``. Data problems raise :class:`kdkeras.data.DataError`, a
``UsageError`` too.
"""


class UsageError(ValueError):
    """A user mistake: a bad flag, name, setting, file or data; the message says what to do."""


class MissingFileError(UsageError, FileNotFoundError):
    """A file, folder or run that the user named does not exist (or is not finished)."""


class NotWritableError(UsageError, PermissionError):
    """A folder the user chose (``--logdir``) cannot be created or written, or its disk is nearly full."""
