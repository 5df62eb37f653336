"""edgeguard.metrics: one Prometheus registry for every function."""

from __future__ import annotations

from edgeguard import metrics

DEFS = {
    "alerts_total": ("counter", "Alerts by rule.", ("rule",)),
    "up": ("gauge", "1 when up.", ()),
    "seconds": ("histogram", "Durations.", ()),
}


def test_text_format_has_help_type_and_values_under_the_prefix():
    m = metrics.Metrics("edgeguard_x_", DEFS)
    m.inc("alerts_total", {"rule": "A"})
    m.set("up", 1)
    m.observe("seconds", 0.003)
    text = m.render()
    assert "# HELP edgeguard_x_alerts_total Alerts by rule.\n# TYPE edgeguard_x_alerts_total counter\n" in text
    assert 'edgeguard_x_alerts_total{rule="A"} 1\n' in text and "edgeguard_x_up 1\n" in text
    assert 'edgeguard_x_seconds_bucket{le="0.005"} 1\n' in text and "edgeguard_x_seconds_count 1\n" in text


def test_a_label_value_a_caller_chose_cannot_break_the_exposition():
    m = metrics.Metrics("p_", DEFS)
    m.inc("alerts_total", {"rule": 'x\ud800"\n'})
    text = m.render()
    text.encode("utf-8")  # a lone surrogate in a label made every later scrape fail
    assert 'p_alerts_total{rule="x\\\\ud800\\"\\n"} 1' in text


def test_caller_chosen_labels_are_capped_at_max_series():
    m = metrics.Metrics("p_", DEFS, {"alerts_total": ("rule",)})
    for i in range(metrics.MAX_SERIES + 50):
        m.inc("alerts_total", {"rule": f"r{i}"})
    assert m.total("alerts_total", rule=metrics.OTHER) == 50
    assert m.total("alerts_total") == metrics.MAX_SERIES + 50
