"""The scene composer: the pure compose() and the ipywidgets panel built on it (headless)."""

from lenslib.eval.widgets import compose, composition_html, scene_composer

APART = [
    {"cls": "star", "color": "yellow", "cx": 0.3, "cy": 0.3, "side": 0.3},
    {"cls": "heart", "color": "pink", "cx": 0.7, "cy": 0.7, "side": 0.3},
]


def test_compose_parses_a_scene_inside_the_limits_back_to_its_spec():
    c = compose(APART)
    assert c.parse_matches_spec
    assert sorted((d["class"], d["color"]) for d in c.detections) == [("heart", "pink"), ("star", "yellow")]
    assert c.recall["detailed"] == 1.0 > c.recall["brief"]
    html = composition_html(c)
    assert "matches the spec" in html and "detailed" in html


def test_overlapping_objects_leave_the_judges_limits():
    c = compose([dict(APART[0], cx=0.45, cy=0.45), dict(APART[1], cx=0.55, cy=0.55)])
    assert not c.parse_matches_spec
    assert "differs from the spec" in composition_html(c)


def test_the_panel_builds_headless_and_redraws_on_change():
    panel = scene_composer("shapes", size=64)
    image = panel.children[-1].children[0]
    text = panel.children[-1].children[1]
    before = image.value
    assert before and "judge's parse" in text.value
    colour = panel.children[0].children[2]
    colour.value = "green" if colour.value != "green" else "purple"
    assert image.value != before
