"""The one exception of trproxy.redirect; lower-level errors are translated into it."""


class RedirectError(Exception):
    """Redirecting traffic is impossible or failed; the message says what to do."""
