"""Metrics, the evaluate command, overlays and the HTML report."""
