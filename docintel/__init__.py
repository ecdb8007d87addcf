"""docintel: a document intelligence pipeline for terminals, scripts and CI."""

__version__ = "0.1.0"
