"""The Parquet results store: its files, its one writer, and the status of a sweep in it. Needs
neither torch nor Ray (pyarrow only), so `rlv status` and the analysis run on a laptop."""
