"""Deploy: the one-command pipeline, its steps and state, and its report."""
