"""Before training: look at the data and choose. Ranking backbones, the regime / resolution / epochs the
advisor picks for `freeze: auto`, time and memory estimates, the learning-rate range test."""
