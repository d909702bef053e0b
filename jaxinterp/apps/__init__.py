"""Applications on top of the library: the command line (`cli`), the IOI demo (`demo`)
and self-contained HTML reports (`report`)."""

# The group's public modules (each has a page in the API reference).
__all__ = ["cli", "demo"]
