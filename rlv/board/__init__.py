"""`rlv board`: a live page of one sweep's factorial design, read from the store alone.

    rlv board [STORE] [--sweep S] [--port 8266]      # then http://127.0.0.1:8266

The grid of trials filling in (cells x seeds, each trial's state), the progress and the time
left, per cell the mean and 95% interval of a metric laid out by the sweep's factors, learning
curves per cell with the seeds as a band, and the ANOVA of the metric once every cell has two
seeds. Like `rlv status` and `rlv analyze` it imports neither torch nor Ray (a test runs it where
neither can be imported), so it runs on a laptop against any store, S3 included.

- config.py: BoardConfig (the defaults) and the command line `rlv launch` prints;
- tables.py: the store's Parquet files of one sweep, each file read once;
- snapshot.py: the sweep now (its grid, states, finished rows), rebuilt only when the store moved;
- stats.py: cell means with t intervals, curves with seed bands, the ANOVA rows;
- charts.py: what the two charts hold, as JSON the page draws with BokehJS;
- data.py: the JSON the page asks for; server.py: the aiohttp server; static/: the page.
"""

from rlv.board.config import BoardConfig, board_command

__all__ = ["BoardConfig", "board_command"]
