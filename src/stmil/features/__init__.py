"""Video -> I3D cuboid features: decoding, the network, its weights, the feature store."""
