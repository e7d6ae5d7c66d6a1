"""Sweep files: parsing and validating a factorial grid x seeds. Needs neither torch nor Ray, so
`rlv check` runs on a laptop."""
