"""TLS interception, a subsystem of its own used by the engine and by new-episodes.

``errors`` (importable without mitmproxy), ``ca`` (our CA and its files), ``endpoint``
(sans-I/O ClientHello parsing and TLS endpoints) and ``stream`` (those endpoints pumped
over asyncio streams, for the sessions). Import the modules, not this package: mitmproxy
and cryptography load only when TLS is intercepted.
"""
