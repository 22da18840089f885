"""stmil: weakly supervised spatiotemporal video anomaly detection (I3D cuboids + MIL)."""

__version__ = "0.1.0"
