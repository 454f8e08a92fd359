"""Keep native runtimes' console chatter out of the user's terminal.

llama.cpp and other C++ runtimes print straight to file descriptor 2, which
Python's logging cannot filter. Their output is captured to a temporary file
and handed to ``logging`` at debug level, so ``--debug`` still shows it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator

log = logging.getLogger(__name__)


@contextlib.contextmanager
def captured_native_stderr(what: str) -> Iterator[None]:
    """Redirect fd 2 for the duration of the block; log what was printed."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode("utf-8", errors="replace").strip()
            if text:
                log.debug("%s printed:\n%s", what, text)
