"""Constants the command line shares with the engines (kept import-light: the CLI reads them
before anything heavy is imported, so a signal during start-up is already handled)."""

FORMATS = ("parquet", "csv")
DEFAULT_CHUNK_ROWS = 512
