"""`make install` hands uv the places pip is configured to look (.ci/uv_args.py): a wrong translation would make uv
download other builds of torch (gigabytes) instead of the local ones, or ignore the machine's constraints."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("uv_args", ROOT / ".ci" / "uv_args.py")
uv_args = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(uv_args)


def test_pip_mirrors_find_links_and_constraints_reach_uv():
    listed = [
        ":env:.cert='/etc/ssl/certs/ca-certificates.crt'",
        ":env:.find-links='/opt/wheels'",
        "global.constraint='/etc/xdg/pip/constraints.txt'",
        "global.extra-index-url='file:///opt/pypi/simple file:///opt/pypi-more/simple'",
        "global.find-links='/opt/old-wheels'",
    ]
    args = uv_args.uv_args(listed)
    pairs = list(zip(args[::2], args[1::2], strict=True))  # every flag here takes a value
    assert ("--find-links", "/opt/wheels") in pairs  # the environment variable wins over the config file, as in pip
    assert ("--find-links", "/opt/old-wheels") not in pairs
    assert ("--constraint", "/etc/xdg/pip/constraints.txt") in pairs
    mirrors = [value for flag, value in pairs if flag == "--extra-index-url"]
    assert mirrors == ["file:///opt/pypi/simple", "file:///opt/pypi-more/simple"]
    assert ("--index-strategy", "unsafe-best-match") in pairs  # pip takes the best version from any index
    assert "/etc/ssl/certs/ca-certificates.crt" not in args  # settings uv has no flag for are left out


def test_install_section_overrides_global_and_no_index_is_kept():
    listed = ["global.index-url='https://a.example/simple'", "install.index-url='https://b.example/simple'",
              "global.no-index='true'"]
    args = uv_args.uv_args(listed)
    assert args == ["--index-url", "https://b.example/simple", "--no-index"]


def test_an_unconfigured_pip_gives_no_flags():
    assert uv_args.uv_args([]) == []
