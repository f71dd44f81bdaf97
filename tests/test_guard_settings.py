"""``[guard]`` in tether.toml: the defaults are the safe ones, bad values are refused with
the key named, and a zero wait can be written as it reads."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from tether.config import Settings
from tether.errors import InvalidRequest


def _load(tmp_path: Path, text: str) -> Settings:
    (tmp_path / "tether.toml").write_text(text, encoding="utf-8")
    return Settings.load(tmp_path)


def test_defaults_count_an_unlabelled_tool_as_untrusted_egress_and_deny_the_trifecta(
    tmp_path: Path,
) -> None:
    guard = Settings.load(tmp_path).guard
    assert guard.unlabelled_tool == ("untrusted", "egress")
    assert guard.trifecta == "deny"
    assert guard.scan_results is True
    assert guard.approval_wait == timedelta(0)


def test_a_zero_wait_and_a_webhook_are_read(tmp_path: Path) -> None:
    guard = _load(
        tmp_path,
        '[guard]\napproval_wait = "0s"\napproval_ttl = "5m"\n'
        'approval_webhook = "https://hooks.example.com/tether"\ntrifecta = "approval"\n',
    ).guard
    assert guard.approval_wait == timedelta(0)
    assert guard.approval_ttl == timedelta(minutes=5)
    assert guard.approval_webhook == "https://hooks.example.com/tether"
    assert guard.trifecta == "approval"


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('unlabelled_tool = ["secret"]', "unlabelled_tool"),
        ('trifecta = "warn"', "trifecta"),
        ('approval_webhook = "file:///etc/passwd"', "approval_webhook"),
        ('approval_wait = "-1s"', "approval_wait"),
        ('flow_window = "0s"', "flow_window"),
        ("args_max_depth = 0", "args_max_depth"),
        ("surprise = 1", "surprise"),
    ],
)
def test_a_bad_guard_setting_is_refused_naming_it(tmp_path: Path, text: str, named: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        _load(tmp_path, f"[guard]\n{text}\n")
    assert "guard" in raised.value.description and named in raised.value.description
