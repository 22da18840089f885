"""The semi-synthetic benchmark: plans, scenes, events, footage and the writer."""
