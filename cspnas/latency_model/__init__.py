"""Latency models: profile a device once (`profile`), fit per-op costs (`model`), predict a candidate's
latency from its config alone (`features`), anywhere."""
