import re

from vt_core.dashboard import DASHBOARD, state_palette


def test_dashboard_is_standalone_html(analysed_study):
    html = (analysed_study / DASHBOARD).read_text()
    assert not re.findall(r"<script[^>]+src=", html), "resources must be INLINE (works offline)"
    assert "Bokeh" in html and "State-transition graph" in html and "Model selection" in html
    assert "Decoded state per seed" in html


def test_palette_is_stable_and_distinct():
    assert state_palette(4) == state_palette(8)[:4]
    assert len(set(state_palette(10))) == 10
