"""pilotline: idle industrial equipment as bookable capacity."""

__version__ = "0.1.0"
