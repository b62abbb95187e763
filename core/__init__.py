"""TransferLab core: datasets, backbones, training, jobs, runs and export. No UI code lives here."""
