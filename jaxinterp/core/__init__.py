"""The bottom layer: model configuration, the site and axis vocabulary, labelled arrays,
metrics and the error family. Imports nothing else from jaxinterp."""

# The group's public modules (each has a page in the API reference).
__all__ = ["config", "sites", "metrics", "readout", "labelled", "labels", "errors"]
