"""The plugin's version, in a module of its own so that code inside the package (provenance entries) can read it
without importing the package's public `__init__`."""

__version__ = "0.1.0"
