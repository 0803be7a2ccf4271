"""Triton for the tests: the real server's environment and process, the in-process ``pb_utils`` stand-in,
and the model file the real server runs."""
