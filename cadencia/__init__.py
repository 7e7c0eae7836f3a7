"""cadencia: the application that composes the hive (`hive_core`) and the world (`world`)."""

__all__ = ["__version__"]
__version__ = "0.1.0"
