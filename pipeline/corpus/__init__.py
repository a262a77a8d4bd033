"""The training corpus: where the photos live and how they become crops."""
