"""What every room of the project shares: option parsing, progress display, core counts, the
tracking store's URI and the registry's names. Import-light: nothing here imports torch or MLflow
at module level, so every command answers ``--help`` at once."""
