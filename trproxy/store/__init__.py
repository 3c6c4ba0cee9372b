"""Recordings as data: the YAML format, crash-safe writing, fast loading, matching."""

from .blobs import DirBlobStore
from .errors import FormatError, NoMatch, StoreError, UnsafeFile
from .ledger import Ledger
from .matcher import Affinity, MockPool, Served, canonical
from .model import FORMAT_VERSION, Exchange
from .recording import (
                        MockWriter,
                        existing_test_sets,
                        has_mocks,
                        load_mocks,
                        next_test_set,
                        recover,
                        test_set_dir,
)

__all__ = [
    "FORMAT_VERSION", "Affinity", "DirBlobStore", "Exchange", "FormatError", "Ledger", "MockPool",
    "MockWriter", "NoMatch", "Served", "StoreError", "UnsafeFile", "canonical", "existing_test_sets",
    "has_mocks", "load_mocks", "next_test_set", "recover", "test_set_dir",
]
