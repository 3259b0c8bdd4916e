"""AdaFrame: adaptive frame selection for fast video recognition (Wu et al., CVPR 2019)."""

__version__ = "0.1.0"
