"""detect-secrets' named detectors, run without its global settings.

The plugin classes are instantiated once per process (:func:`engine`) and their patterns
run directly: no global detect-secrets settings are touched (``default_settings()`` /
``transient_settings`` are process-global and would race with anything else using
detect-secrets), nothing is verified, nothing is sent anywhere. Each plugin carries a cheap
whole-text test (``literals`` a match must hold, ``gates`` that match wherever it may) so
that a scanner analyses only the lines that can hold a match.

:func:`typed` is the type of a whole value one of the named detectors recognises: part of
the one classifier, :func:`tether.discover.classify.classify`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any

from detect_secrets.plugins.artifactory import ArtifactoryDetector
from detect_secrets.plugins.aws import AWSKeyDetector
from detect_secrets.plugins.azure_storage_key import AzureStorageKeyDetector
from detect_secrets.plugins.basic_auth import BasicAuthDetector
from detect_secrets.plugins.cloudant import CloudantDetector
from detect_secrets.plugins.discord import DiscordBotTokenDetector
from detect_secrets.plugins.github_token import GitHubTokenDetector
from detect_secrets.plugins.gitlab_token import GitLabTokenDetector
from detect_secrets.plugins.high_entropy_strings import (
    Base64HighEntropyString,
    HexHighEntropyString,
)
from detect_secrets.plugins.ibm_cloud_iam import IbmCloudIamDetector
from detect_secrets.plugins.ibm_cos_hmac import IbmCosHmacDetector
from detect_secrets.plugins.jwt import JwtTokenDetector
from detect_secrets.plugins.keyword import (
    DENYLIST,
    KeywordDetector,
)
from detect_secrets.plugins.mailchimp import MailchimpDetector
from detect_secrets.plugins.npm import NpmDetector
from detect_secrets.plugins.openai import OpenAIDetector
from detect_secrets.plugins.private_key import PrivateKeyDetector
from detect_secrets.plugins.pypi_token import PypiTokenDetector
from detect_secrets.plugins.sendgrid import SendGridDetector
from detect_secrets.plugins.slack import SlackDetector
from detect_secrets.plugins.softlayer import SoftlayerDetector
from detect_secrets.plugins.square_oauth import SquareOAuthDetector
from detect_secrets.plugins.stripe import StripeDetector
from detect_secrets.plugins.telegram_token import TelegramBotTokenDetector
from detect_secrets.plugins.twilio import TwilioKeyDetector

__all__ = [
    "AWS_KEY_ID",
    "DS_TYPES",
    "HIGH_CONFIDENCE",
    "Engine",
    "RegexPlugin",
    "engine",
    "regex_values",
    "type_of",
    "typed",
]

# detect-secrets plugin class -> credential type (AWS and Slack are refined by value).
DS_TYPES: dict[str, str] = {
    "ArtifactoryDetector": "artifactory-token",
    "AWSKeyDetector": "aws-access-key",
    "AzureStorageKeyDetector": "azure-storage-key",
    "BasicAuthDetector": "basic-auth-password",
    "CloudantDetector": "cloudant-credential",
    "DiscordBotTokenDetector": "discord-bot-token",
    "GitHubTokenDetector": "github-token",
    "GitLabTokenDetector": "gitlab-token",
    "IbmCloudIamDetector": "ibm-cloud-iam-key",
    "IbmCosHmacDetector": "ibm-cos-hmac-key",
    "JwtTokenDetector": "jwt",
    "MailchimpDetector": "mailchimp-api-key",
    "NpmDetector": "npm-token",
    "OpenAIDetector": "openai-api-key",
    "PrivateKeyDetector": "private-key",
    "PypiTokenDetector": "pypi-token",
    "SendGridDetector": "sendgrid-api-key",
    "SlackDetector": "slack-token",
    "SoftlayerDetector": "softlayer-api-key",
    "SquareOAuthDetector": "square-oauth-secret",
    "StripeDetector": "stripe-api-key",
    "TelegramBotTokenDetector": "telegram-bot-token",
    "TwilioKeyDetector": "twilio-api-key",
}
# Distinctive enough to report in documentation and example files too.
HIGH_CONFIDENCE = frozenset(
    {
        "AWSKeyDetector",
        "AzureStorageKeyDetector",
        "GitHubTokenDetector",
        "GitLabTokenDetector",
        "NpmDetector",
        "OpenAIDetector",
        "PrivateKeyDetector",
        "PypiTokenDetector",
        "SendGridDetector",
        "SlackDetector",
        "SquareOAuthDetector",
        "StripeDetector",
    }
)


@dataclass(frozen=True)
class RegexPlugin:
    """A detect-secrets regex plugin and how to find, fast, the lines it may match:
    ``literals`` (one must be in the text, ``str`` search) and ``gates`` (patterns, run
    over the text or its lower-case copy, whose matches mark the lines to analyse: a
    superset of the plugin's own matches)."""

    name: str
    plugin: Any
    literals: tuple[str, ...]
    gates: tuple[tuple[re.Pattern[str], bool], ...]  # (pattern, on the lower-case text)
    high_confidence: bool


@dataclass(frozen=True)
class Engine:
    regex_plugins: tuple[RegexPlugin, ...]
    keyword: Any
    keyword_gate: re.Pattern[str]  # on the lower-case text
    keyword_gate_ci: re.Pattern[str]  # on the text (when lower-casing changes offsets)
    entropy: tuple[Any, ...]


# Plugins whose own patterns are slow to run over a whole text (they begin with
# look-behinds or wide classes): faster patterns that match wherever they may.
_GATES: dict[str, tuple[tuple[str, bool], ...]] = {
    "ArtifactoryDetector": ((r"AKC|AP[\dA-F]", False),),
    "AWSKeyDetector": ((r"A3T[A-Z0-9]|ABIA|ACCA|AKIA|ASIA", False), (r"aws", True)),
    "CloudantDetector": (
        (r"cl(?:oudant|ou)?[_-]?(?:api)?(?:key|pwd|pw|pass|token)", True),
        (r"cloudant\.com", True),
    ),
    "IbmCloudIamDetector": (
        (
            r"(?:key|pwd|password|pass|token)[\"'\]]{0,2} *(?:=>|:=|::|=|:)? *[\"']?"
            r"[a-z0-9_\-]{44}",
            True,
        ),
    ),
    "IbmCosHmacDetector": ((r"secret[-_]?(?:access)?[-_]?key", True),),
    "SoftlayerDetector": (
        (r"(?:softlayer|sl)[_-]?(?:api)?[_-]?(?:key|pwd|password|pass|token)", True),
        (r"api\.softlayer\.com", True),
    ),
    "MailchimpDetector": ((r"-us[0-9]", False),),
    "TelegramBotTokenDetector": ((r":[0-9A-Za-z_-]{35}", False),),
    "DiscordBotTokenDetector": ((r"\.[a-zA-Z0-9_-]{6}\.[a-zA-Z0-9_-]{27}", False),),
}
# Plugins with a literal every match holds: skipped on a text without one.
_LITERALS: dict[str, tuple[str, ...]] = {
    "AzureStorageKeyDetector": ("AccountKey=",),
    "BasicAuthDetector": ("://",),
    "GitHubTokenDetector": ("ghp_", "gho_", "ghu_", "ghs_", "ghr_"),
    "GitLabTokenDetector": (
        "glpat-", "gldt-", "glft-", "glsoat-", "glrt-", "GR1348941", "glcbt-", "glimt-",
        "glptt-", "glagent-", "gloas-",
    ),
    "JwtTokenDetector": ("eyJ",),
    "NpmDetector": ("_authToken",),
    "OpenAIDetector": ("T3BlbkFJ",),
    "PrivateKeyDetector": ("PRIVATE KEY", "PuTTY-User-Key-File-2"),
    "PypiTokenDetector": ("pypi-",),
    "SendGridDetector": ("SG.",),
    "SlackDetector": ("xox", "hooks.slack.com"),
    "SquareOAuthDetector": ("sq0csp-",),
    "StripeDetector": ("k_live_",),
}  # fmt: skip


@cache
def engine() -> Engine:
    """detect-secrets' plugins, built once per process (their default settings)."""
    classes = (
        ArtifactoryDetector,
        AWSKeyDetector,
        AzureStorageKeyDetector,
        BasicAuthDetector,
        CloudantDetector,
        DiscordBotTokenDetector,
        GitHubTokenDetector,
        GitLabTokenDetector,
        IbmCloudIamDetector,
        IbmCosHmacDetector,
        JwtTokenDetector,
        MailchimpDetector,
        NpmDetector,
        OpenAIDetector,
        PrivateKeyDetector,
        PypiTokenDetector,
        SendGridDetector,
        SlackDetector,
        SoftlayerDetector,
        SquareOAuthDetector,
        StripeDetector,
        TelegramBotTokenDetector,
        TwilioKeyDetector,
    )
    plugins = []
    for cls in classes:
        plugin = cls()
        name = cls.__name__
        if name in _GATES:
            gates = tuple((re.compile(p), lower) for p, lower in _GATES[name])
        else:  # the plugin's own patterns, with ^ and $ at every line
            gates = tuple(
                (re.compile(r.pattern, r.flags | re.MULTILINE), False) for r in plugin.denylist
            )
        literals = _LITERALS.get(name, ())
        plugins.append(RegexPlugin(name, plugin, literals, gates, name in HIGH_CONFIDENCE))
    words = "|".join(DENYLIST)
    return Engine(
        tuple(plugins),
        KeywordDetector(),
        re.compile(words),
        re.compile(words, re.IGNORECASE),
        (Base64HighEntropyString(), HexHighEntropyString()),
    )


AWS_KEY_ID = re.compile(r"A3T|ABIA|ACCA|AKIA|ASIA")
_GROUP_IS_PREFIX = frozenset({"GitHubTokenDetector", "GitLabTokenDetector"})


def regex_values(regex_plugin: RegexPlugin, line: str) -> Iterator[str]:
    """The secrets a detect-secrets regex plugin matches in ``line``. Its own
    ``analyze_string`` yields a pattern's capturing groups, which for GitHub and GitLab are
    only the prefix (``(ghp|gho|...)_...`` yields ``ghp``): the fingerprint has to be of the
    whole secret, so for those the whole match is taken, for the others the (longest)
    group, which is the secret (AWS secret keys, basic-auth passwords, npm tokens ...)."""
    plugin = regex_plugin.plugin
    whole = regex_plugin.name in _GROUP_IS_PREFIX
    for regex in plugin.denylist:
        for match in regex.finditer(line):
            groups = [g for g in match.groups() if g]
            value = match.group(0) if whole or not groups else max(groups, key=len)
            value = value.lstrip(" \t=:\"'").rstrip(" \t\"'")
            if regex_plugin.name == "AzureStorageKeyDetector" and "=" in value:
                value = value.split("=", 1)[1]
            if regex_plugin.name == "JwtTokenDetector" and not plugin.is_formally_valid(value):
                continue
            if value:
                yield value


def typed(value: str) -> tuple[str, str] | None:
    """The type of a whole value that one of detect-secrets' named detectors recognises
    (a decoded Kubernetes Secret, a base64 value): ``(type, detector)``."""
    for regex_plugin in engine().regex_plugins:
        if regex_plugin.name in ("PrivateKeyDetector", "BasicAuthDetector"):
            continue
        if any(found == value for found in regex_values(regex_plugin, value)):
            return type_of(regex_plugin.name, value), f"detect-secrets:{regex_plugin.name}"
    return None


def type_of(detector: str, value: str) -> str:
    """The credential type of ``value`` found by the named ``detector`` (AWS and Slack
    refined by the value: a secret key is not a key ID, a webhook is not a token)."""
    if detector == "AWSKeyDetector" and not AWS_KEY_ID.match(value):
        return "aws-secret-key"
    if detector == "SlackDetector" and value.startswith("https://"):
        return "slack-webhook"
    return DS_TYPES[detector]
