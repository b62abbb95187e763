"""Pretrained networks: the catalogue and weights, freezing, frozen features."""
