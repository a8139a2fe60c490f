"""A template world model for loopnav (see model.py)."""
