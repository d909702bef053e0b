"""The bottom layer: model configuration, the site and axis vocabulary, labelled arrays, metrics and the error family. Imports nothing else from jaxinterp."""
