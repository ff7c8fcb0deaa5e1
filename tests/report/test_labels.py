from vt_core.metrics.registry import REGISTRY
from vt_core.names import PAPER_METRICS, SCALARS
from vt_core.report.labels import LABELS, axis_label, metric_label, short_label


def test_every_built_in_metric_has_a_long_name_and_units():
    import vt_core.metrics.activations  # noqa: F401  (registers the metrics)
    import vt_core.metrics.weights  # noqa: F401

    assert set(PAPER_METRICS) | set(SCALARS) <= set(LABELS)
    # plugins registered by other tests of the session (tests/plugins, the fuzz payloads) are not vt's
    builtin = {m for m, metric in REGISTRY.items() if metric.builtin}
    assert builtin <= set(LABELS), builtin - set(LABELS)
    assert {"l2", "effective_rank", "cka_prev"} <= builtin and "frobenius_squared" not in builtin
    assert all(label.units for label in LABELS.values())


def test_labels_of_layers_and_unknown_metrics():
    assert axis_label("test_accuracy") == "held-out accuracy [fraction correct]"
    assert metric_label("l2@blocks.0.mlp.W_in") == ("L2 (Frobenius) norm, blocks.0.mlp.W_in", "weight units")
    assert metric_label("my_plugin_metric") == ("my_plugin_metric", "")
    assert axis_label("my_plugin_metric") == "my_plugin_metric" and short_label("var_w") == "var_w [weight units²]"
