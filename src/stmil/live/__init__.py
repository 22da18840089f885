"""Incidents from scores, offline (``stmil events``) and live (``stmil watch``), and the
threshold that a target false-incident rate asks for (``stmil calibrate``)."""
