"""cspnas: hardware-aware NAS over the Cross-Stage-Partial design space."""
__version__ = "0.1.0"
