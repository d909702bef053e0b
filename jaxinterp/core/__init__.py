"""The bottom layer: model configuration, the site and axis vocabulary, labelled arrays,
metrics (and what a plain metric function reads) and the error family. Imports nothing else from jaxinterp."""

# The group's public modules (each has a page in the API reference).
__all__ = ["config", "sites", "metrics", "metric_reads", "readout", "labelled", "labels", "errors"]
