"""The trial side: data on the device, the thesis's models, training, evaluation and FID.

Needs torch, never Ray: a trial runs and is tested without a cluster (`rlv train`, the tests), and
the sweep service (rlv.service) is one more caller of `rlv.trial.run.run_trial`.
"""
