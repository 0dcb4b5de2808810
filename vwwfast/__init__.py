"""vwwfast: fast knowledge distillation for Visual Wake Words."""

__version__ = "0.1.0"
