"""Smart fitting-room service: domain package behind api.py, models.py and the scripts."""

__version__ = "0.1.0"
