from vt_core.models.registry import build_model

__all__ = ["build_model"]
