"""The one exception base of stmil: every user mistake is a :class:`StmilError`.

The CLI prints a :class:`StmilError` (and an :class:`OSError`, which names its file) as one
``error: ...`` line and exits non-zero; any other exception is a bug and shows its traceback.
Each subclass also derives from the builtin it replaced, so ``except ValueError`` keeps working.
"""

from __future__ import annotations


class StmilError(Exception):
    """A problem with the user's input, files or settings; the message names the file and fix."""


class ConfigError(StmilError, ValueError):
    """A command-line flag or config value that is out of range or of the wrong type."""


class OutputError(StmilError, ValueError):
    """An output path that stmil may not write: it holds data stmil cannot prove is its own."""


class ModelError(StmilError, ValueError):
    """A run folder, model or checkpoint that cannot be used."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill PID``, a service manager stopping stmil), raised in the main thread as
    an interrupt so that every command cleans up exactly as after Ctrl-C (temporaries, claims,
    staging folders); see :func:`stmil.cli.terminate_as_interrupt`."""
