"""Multiple-instance learning: bags, the scorer, its config, training and the run folder."""
