"""The errors a person sees: each message says what is wrong, where, and what to do instead."""


class ConfigError(ValueError):
    """A configuration problem, phrased for the person who wrote the config."""


class DatasetError(ValueError):
    """The dataset cannot be used; the message says what is wrong and what to do."""


class WeightsError(ValueError):
    """Weights could not be loaded; the message says why and what to do instead."""


class TrainingError(RuntimeError):
    """Training cannot go on; the message says why and what to change."""


class AccessError(ValueError):
    """A path is outside what this server may read or write; the message says which and who can allow it."""
