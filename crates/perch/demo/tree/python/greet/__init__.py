"""A tiny package that lives in a CernVM-FS repository."""

import hashlib
import os

__version__ = "1.0"


def hello(name="world"):
    here = os.path.dirname(os.path.abspath(__file__))
    return f"hello {name}, from {here}"


def digest(path):
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
