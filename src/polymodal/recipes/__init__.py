"""End-to-end runs the command line calls: each reads data, trains or loads a model, evaluates and writes
its outputs. The top of the library, below the CLI and the search server."""
