"""The bottom layer: file formats and shared utilities every other layer may use (checkpoint and JSON
I/O, distributed helpers). It imports nothing else from polymodal but :mod:`polymodal.errors`."""
