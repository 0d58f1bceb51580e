"""Metric backbones: loading pretrained networks (local path, cache or hub id) and embedding.

Missing weights raise ``MissingWeightsError`` naming them and how to supply them; random weights
only when a caller asks (tests).
"""
