"""Training, evaluation and export of the multi-task classifier."""
