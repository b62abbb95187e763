"""`freeze: auto` resolved in one place (core/workflows/auto.py) for the jobs, `train` and `distill`."""

from core.workflows.auto import resolve_auto


def test_a_chosen_freeze_comes_back_as_it_is_with_no_notes(tiny_config):
    resolved = resolve_auto(tiny_config)
    assert resolved.config is tiny_config and resolved.notes == [] and resolved.paragraph == ""


def test_auto_becomes_the_advisors_choice_with_its_reasons_and_progress(tiny_config):
    phases = []
    resolved = resolve_auto(tiny_config.replace(freeze="auto", backbone="tf_efficientnet_lite0", weights="bundled",
                                                img_size=0), progress=lambda *p: phases.append(p))
    assert resolved.config.freeze in ("probe", "partial")
    assert any("cross-validation" in n for n in resolved.notes) and resolved.paragraph == " ".join(resolved.notes)
    assert phases  # the look at the data reports its progress
