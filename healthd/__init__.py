"""healthd: a health-checker daemon for OpenStack clouds."""

__version__ = "0.1.0"
