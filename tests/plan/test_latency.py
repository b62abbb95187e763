"""CPU latency of catalogue backbones, measured on this machine and kept in its cache."""

from core.cli import main
from core.plan.latency import cached_latency, catalogue_rows, measure_latency


def test_latency_is_measured_once_and_shown_from_the_cache(capsys):
    assert cached_latency() == {}  # a fresh cache (conftest): nothing measured here yet
    got = measure_latency(("test_efficientnet", "test_vit"), repeats=3)
    assert set(got) == {"test_efficientnet", "test_vit"} and all(0 < ms < 10_000 for ms in got.values())
    assert cached_latency() == got  # read back by the next process, the Model page and `backbones`
    assert {r["backbone"] for r in catalogue_rows()} >= {"tf_efficientnet_lite0", "resnet50"}
    assert main(["backbones"]) == 0 and "CPU ms/image" in capsys.readouterr().out
