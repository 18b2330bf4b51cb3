"""aicmo: the action orchestration layer (AOL) of a marketing automation backend."""

__version__ = "0.1.0"
