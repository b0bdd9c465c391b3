"""The Python worker of the idefics2 npm package; see docs/PROTOCOL.md."""

PROTOCOL_VERSION = 1
__version__ = "0.1.0"
