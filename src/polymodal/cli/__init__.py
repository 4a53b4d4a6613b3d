"""Command-line interface: a thin skin over the library."""
