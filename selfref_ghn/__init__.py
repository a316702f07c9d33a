"""selfref_ghn: Self-Referential Graph HyperNetworks in JAX."""

__version__ = "0.1.0"
