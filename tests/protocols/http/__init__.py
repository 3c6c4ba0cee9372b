"""Tests of the HTTP dialect (trproxy.protocols.http)."""
