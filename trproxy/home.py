"""trproxy's own directory (``$TRPROXY_HOME``, default ``~/.trproxy``): the CA, the cache key."""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "TRPROXY_HOME"


def trproxy_home(home: str | os.PathLike[str] | None = None) -> Path:
    """The config dir: ``home``, else ``$TRPROXY_HOME``, else ``~/.trproxy``."""
    if home is not None:
        return Path(home)
    env = os.environ.get(HOME_ENV)
    return Path(env) if env else Path.home() / ".trproxy"
