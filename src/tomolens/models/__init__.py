"""Model engine: networks, model cards, shipped weights, device choice, tiled inference.

Torch is imported lazily by the modules that need it; importing this package does not.
"""
