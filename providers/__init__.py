"""Built-in GPU providers: ``local`` (a folder on this machine), ``ssh`` (any host), ``vast``."""
