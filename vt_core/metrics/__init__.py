from vt_core.metrics.compute import load_features, seed_metrics, write_seed_metrics, init_metrics_store

__all__ = ["load_features", "seed_metrics", "write_seed_metrics", "init_metrics_store"]
