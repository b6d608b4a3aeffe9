"""PyTorch -> Flax weight converters (need the ``convert`` extra: torch).

``common`` holds the layout rules shared by every network family (architecture.md 1.6).
"""
