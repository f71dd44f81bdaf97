"""AI-provider API keys: what they look like and what a variable holding one is called.

The first tier of the one classifier every scanner uses,
:mod:`tether.discover.classify` (scanners type values there, not here; the secrets scanner
also searches texts with :func:`find_keys` / :func:`find_hinted`). Placeholders are
:mod:`tether.discover.placeholders`' (re-exported here as :func:`is_placeholder`). Nothing
here keeps a value: callers fingerprint it with
:meth:`tether.discover.interface.Credential.of`.

Two kinds of pattern:

* **prefixed** keys (:data:`PREFIXED`) carry a distinctive prefix (``sk-ant-api03-``,
  ``gsk_``, ``hf_`` ...) and are recognised anywhere in a text (:func:`find_keys`);
* **hinted** keys (:data:`HINTED`) have no prefix (Mistral, Cohere, a DeepSeek ``sk-`` +
  32 hex digits, a Pinecone UUID ...) and are recognised only when the name they are
  assigned to says which provider they belong to (``MISTRAL_API_KEY=...``).

Each pattern names its source of truth, as best known: the provider's documentation, the
secret-scanning partner pattern the provider registered with GitHub, or the community rule
in gitleaks (``config/gitleaks.toml``) when the provider publishes none. Key formats change;
a prefix rule is kept lenient on length (a placeholder is rejected by
:func:`is_placeholder`, not by an exact length) so that a longer new key still matches.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from tether.discover.placeholders import is_placeholder

__all__ = [
    "HINTED",
    "HINT_LITERALS",
    "PREFIXED",
    "PREFIXES",
    "KeyMatch",
    "KeyPattern",
    "classify",
    "find_hinted",
    "find_keys",
    "has_hint",
    "is_placeholder",
    "normalise_name",
    "type_for_name",
]


@dataclass(frozen=True, slots=True)
class KeyPattern:
    """One key format: the credential ``type`` it is reported as, the ``provider``, the
    ``regex`` a whole key matches, where the format comes from (``source``), and for a key
    without a prefix the ``hint`` a name must match (on the name normalised to
    ``UPPER_SNAKE``)."""

    type: str
    provider: str
    regex: str
    source: str
    hint: str | None = None


# Order matters: the more specific prefix first (``sk-ant-`` and ``sk-or-v1-`` before the
# legacy OpenAI ``sk-`` + 48).
PREFIXED: tuple[KeyPattern, ...] = (
    KeyPattern(
        "anthropic-admin-key",
        "anthropic",
        r"sk-ant-admin\d\d-[A-Za-z0-9_-]{32,}",
        "Anthropic Admin API keys (docs.anthropic.com, Admin API); gitleaks "
        "anthropic-admin-api-key",
    ),
    KeyPattern(
        "anthropic-api-key",
        "anthropic",
        r"sk-ant-api\d\d-[A-Za-z0-9_-]{32,}",
        "Anthropic API keys (console.anthropic.com, sk-ant-api03-...); GitHub secret scanning "
        "partner pattern; gitleaks anthropic-api-key",
    ),
    KeyPattern(
        "anthropic-oauth-token",
        "anthropic",
        r"sk-ant-oat\d\d-[A-Za-z0-9_-]{32,}",
        "Anthropic OAuth tokens (Claude Code `claude setup-token`, sk-ant-oat01-...)",
    ),
    KeyPattern(
        "openrouter-api-key",
        "openrouter",
        r"sk-or-v1-[a-f0-9]{64}",
        "OpenRouter API keys (openrouter.ai/keys, sk-or-v1- + 64 hex)",
    ),
    KeyPattern(
        "langfuse-secret-key",
        "langfuse",
        r"sk-lf-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
        "Langfuse project secret keys (langfuse.com docs, sk-lf-<uuid>; pk-lf- is public)",
    ),
    KeyPattern(
        "openai-admin-key",
        "openai",
        r"sk-admin-[A-Za-z0-9_-]{20,}",
        "OpenAI Admin keys (platform.openai.com/docs/api-reference/administration)",
    ),
    KeyPattern(
        "openai-api-key",
        "openai",
        r"sk-(?:proj|svcacct|None)-[A-Za-z0-9_-]{20,}",
        "OpenAI project / service-account / user keys (platform.openai.com/api-keys; GitHub "
        "secret scanning partner pattern; gitleaks openai-api-key: ...T3BlbkFJ...)",
    ),
    KeyPattern(
        "openai-api-key",
        "openai",
        r"sk-[A-Za-z0-9]{48}",
        "OpenAI legacy user keys: sk- + 48 alphanumerics (20 + 'T3BlbkFJ' + 20)",
    ),
    KeyPattern(
        "google-api-key",
        "google",
        r"AIza[0-9A-Za-z_-]{35}",
        "Google API keys, used by Gemini / Google AI Studio (cloud.google.com/docs/"
        "authentication/api-keys; gitleaks gcp-api-key)",
    ),
    KeyPattern(
        "huggingface-token",
        "huggingface",
        r"hf_[A-Za-z]{34}",
        "Hugging Face user access tokens (huggingface.co/docs/hub/security-tokens; GitHub "
        "secret scanning partner; gitleaks huggingface-access-token)",
    ),
    KeyPattern(
        "huggingface-token",
        "huggingface",
        r"api_org_[A-Za-z]{34}",
        "Hugging Face organisation API tokens (legacy; gitleaks "
        "huggingface-organization-api-token)",
    ),
    KeyPattern(
        "groq-api-key",
        "groq",
        r"gsk_[A-Za-z0-9]{52}",
        "Groq API keys (console.groq.com/keys, gsk_ + 52; GitHub secret scanning partner)",
    ),
    KeyPattern(
        "replicate-api-token",
        "replicate",
        r"r8_[A-Za-z0-9]{37}",
        "Replicate API tokens (replicate.com/account/api-tokens, r8_ + 37; GitHub partner)",
    ),
    KeyPattern(
        "perplexity-api-key",
        "perplexity",
        r"pplx-[A-Za-z0-9]{40,64}",
        "Perplexity API keys (docs.perplexity.ai, pplx- + 48; gitleaks perplexity-api-key)",
    ),
    KeyPattern(
        "xai-api-key",
        "xai",
        r"xai-[A-Za-z0-9]{70,90}",
        "xAI (Grok) API keys (console.x.ai, xai- + 80; gitleaks xai-api-key)",
    ),
    KeyPattern(
        "fireworks-api-key",
        "fireworks",
        r"fw_[A-Za-z0-9]{20,40}",
        "Fireworks AI API keys (fireworks.ai/account/api-keys, fw_ + ~24)",
    ),
    KeyPattern(
        "langsmith-api-key",
        "langsmith",
        r"lsv2_(?:pt|sk)_[a-f0-9]{32}_[a-f0-9]{10}",
        "LangSmith personal / service keys (docs.smith.langchain.com, lsv2_pt_ / lsv2_sk_)",
    ),
    KeyPattern(
        "pinecone-api-key",
        "pinecone",
        r"pcsk_[A-Za-z0-9]{4,10}_[A-Za-z0-9]{40,80}",
        "Pinecone API keys (docs.pinecone.io, pcsk_ since 2024; older ones are UUIDs: hinted)",
    ),
    KeyPattern(
        "together-api-key",
        "together",
        r"tgp_v1_[A-Za-z0-9_-]{40,50}",
        "Together AI API keys (api.together.ai/settings/api-keys, tgp_v1_; older: 64 hex, hinted)",
    ),
    KeyPattern(
        "nvidia-api-key",
        "nvidia",
        r"nvapi-[A-Za-z0-9_-]{60,70}",
        "NVIDIA NIM / build.nvidia.com API keys (nvapi- + 64)",
    ),
    KeyPattern(
        "tavily-api-key",
        "tavily",
        r"tvly-(?:dev-|prod-)?[A-Za-z0-9]{32}",
        "Tavily search API keys (app.tavily.com, tvly- + 32; popular agent tool)",
    ),
    KeyPattern(
        "cerebras-api-key",
        "cerebras",
        r"csk-[a-z0-9]{48}",
        "Cerebras Inference API keys (cloud.cerebras.ai, csk- + 48)",
    ),
    KeyPattern(
        "elevenlabs-api-key",
        "elevenlabs",
        r"sk_[a-f0-9]{48}",
        "ElevenLabs API keys (elevenlabs.io, sk_ + 48 hex; gitleaks-style)",
    ),
    KeyPattern(
        "anyscale-api-key",
        "anyscale",
        r"esecret_[A-Za-z0-9]{20,}",
        "Anyscale Endpoints API keys (esecret_)",
    ),
)

# A name "hints" a provider: the name (normalised to UPPER_SNAKE) contains one of these
# words as a whole ``_``-separated word, and says it is a key (KEY / TOKEN / SECRET / PAT).
_HINT_WORDS = {
    "mistral": r"MISTRAL(?:AI)?",
    "cohere": r"COHERE|CO(?=_API_KEY$)",
    "deepseek": r"DEEPSEEK",
    "together": r"TOGETHER(?:AI)?|TOGETHER_AI",
    "pinecone": r"PINECONE",
    "azure-openai": r"AZURE_OPENAI|AOAI|AZURE_OAI",
    "voyage": r"VOYAGE(?:AI)?",
    "wandb": r"WANDB",
    "assemblyai": r"ASSEMBLYAI|ASSEMBLY_AI",
    "deepgram": r"DEEPGRAM",
    "ai21": r"AI21",
    "serpapi": r"SERPAPI|SERP_API",
    "jina": r"JINA(?:AI)?",
}

HINTED: tuple[KeyPattern, ...] = (
    KeyPattern(
        "mistral-api-key",
        "mistral",
        r"[A-Za-z0-9]{32}",
        "Mistral AI API keys (console.mistral.ai): 32 alphanumerics, no prefix",
        _HINT_WORDS["mistral"],
    ),
    KeyPattern(
        "cohere-api-key",
        "cohere",
        r"[A-Za-z0-9]{40}",
        "Cohere API keys (dashboard.cohere.com; SDK reads CO_API_KEY): 40 alphanumerics",
        _HINT_WORDS["cohere"],
    ),
    KeyPattern(
        "deepseek-api-key",
        "deepseek",
        r"sk-[a-f0-9]{32}",
        "DeepSeek API keys (platform.deepseek.com): sk- + 32 hex",
        _HINT_WORDS["deepseek"],
    ),
    KeyPattern(
        "together-api-key",
        "together",
        r"[a-f0-9]{64}",
        "Together AI legacy API keys: 64 hex",
        _HINT_WORDS["together"],
    ),
    KeyPattern(
        "pinecone-api-key",
        "pinecone",
        r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
        "Pinecone legacy API keys: a UUID",
        _HINT_WORDS["pinecone"],
    ),
    KeyPattern(
        "azure-openai-api-key",
        "azure-openai",
        r"[a-f0-9]{32}|[A-Za-z0-9]{84}",
        "Azure OpenAI resource keys (learn.microsoft.com, Keys and Endpoint): 32 hex, newer 84",
        _HINT_WORDS["azure-openai"],
    ),
    KeyPattern(
        "voyage-api-key",
        "voyage",
        r"pa-[A-Za-z0-9_-]{40,50}",
        "Voyage AI API keys (dash.voyageai.com): pa- + 43",
        _HINT_WORDS["voyage"],
    ),
    KeyPattern(
        "wandb-api-key",
        "wandb",
        r"[a-f0-9]{40}|local-[a-f0-9]{40}",
        "Weights & Biases API keys (wandb.ai/authorize): 40 hex",
        _HINT_WORDS["wandb"],
    ),
    KeyPattern(
        "assemblyai-api-key",
        "assemblyai",
        r"[a-f0-9]{32}",
        "AssemblyAI API keys: 32 hex",
        _HINT_WORDS["assemblyai"],
    ),
    KeyPattern(
        "deepgram-api-key",
        "deepgram",
        r"[a-f0-9]{40}",
        "Deepgram API keys: 40 hex",
        _HINT_WORDS["deepgram"],
    ),
    KeyPattern(
        "ai21-api-key",
        "ai21",
        r"[A-Za-z0-9]{32}",
        "AI21 Labs API keys: 32 alphanumerics",
        _HINT_WORDS["ai21"],
    ),
    KeyPattern(
        "serpapi-api-key",
        "serpapi",
        r"[a-f0-9]{64}",
        "SerpApi keys (popular agent search tool): 64 hex",
        _HINT_WORDS["serpapi"],
    ),
    KeyPattern(
        "jina-api-key",
        "jina",
        r"jina_[A-Za-z0-9_-]{40,80}",
        "Jina AI API keys: jina_ + ~60",
        _HINT_WORDS["jina"],
    ),
)

# Variable names that say which AI provider's key they hold, whatever the value looks like
# (OPENAI_API_KEY, HF_TOKEN, ...): (type, words). Matched on UPPER_SNAKE as whole words.
_NAME_TYPES: tuple[tuple[str, str], ...] = (
    ("azure-openai-api-key", r"AZURE_OPENAI|AOAI|AZURE_OAI"),
    ("openrouter-api-key", r"OPENROUTER"),
    ("openai-api-key", r"OPENAI"),
    ("anthropic-api-key", r"ANTHROPIC|CLAUDE"),
    ("google-api-key", r"GEMINI|GOOGLE(?:_GENAI|_AI)?|GENAI|PALM"),
    ("huggingface-token", r"HF|HUGGINGFACE(?:HUB)?|HUGGING_FACE(?:_HUB)?"),
    ("groq-api-key", r"GROQ"),
    ("replicate-api-token", r"REPLICATE"),
    ("perplexity-api-key", r"PERPLEXITY|PPLX"),
    ("xai-api-key", r"XAI|GROK"),
    ("fireworks-api-key", r"FIREWORKS(?:_AI)?"),
    ("langsmith-api-key", r"LANGSMITH|LANGCHAIN"),
    ("langfuse-secret-key", r"LANGFUSE(?=_SECRET)"),
    ("nvidia-api-key", r"NVIDIA|NGC|NIM"),
    ("tavily-api-key", r"TAVILY"),
    ("cerebras-api-key", r"CEREBRAS"),
    ("elevenlabs-api-key", r"ELEVENLABS|ELEVEN_LABS|XI(?=_API_KEY$)"),
    ("anyscale-api-key", r"ANYSCALE"),
    *((p.type, p.hint) for p in HINTED if p.hint is not None),
)

_KEYISH = re.compile(r"(?:^|_)(?:API_?KEY|KEY|TOKEN|SECRET|SECRET_KEY|ACCESS_KEY|PAT)(?:_|$)")
_NOT_KEY = re.compile(
    r"(?:^|_)(?:PUBLIC|ID|BASE|URL|URI|ENDPOINT|HOST|MODEL|VERSION|REGION|NAME|PATH|FILE|DIR|"
    r"ENV|VAR|HEADER|TYPE|LIMIT|COUNT|MAX|MIN|PROJECT|ORG|ORGANIZATION|DEPLOYMENT|ENABLED)(?:_|$)"
)


@dataclass(frozen=True, slots=True)
class KeyMatch:
    """A key found in a text: its ``type``, ``provider``, the value (to fingerprint, never
    to keep), and its offsets in the text."""

    type: str
    provider: str
    value: str
    start: int
    end: int


_BOUNDARY_BEFORE = r"(?<![A-Za-z0-9_\-])"
_BOUNDARY_AFTER = r"(?![A-Za-z0-9_\-])"
_FIND = re.compile(
    _BOUNDARY_BEFORE
    + "(?:"
    + "|".join(f"(?P<p{i}>{p.regex})" for i, p in enumerate(PREFIXED))
    + ")"
    + _BOUNDARY_AFTER
)
# Every prefixed key starts with one of these: found with str.find (fast) before the
# alternation is tried, anchored, at each place.
PREFIXES = (
    "sk-",
    "sk_",
    "AIza",
    "hf_",
    "api_org_",
    "gsk_",
    "r8_",
    "pplx-",
    "xai-",
    "fw_",
    "lsv2_",
    "pcsk_",
    "tgp_v1_",
    "nvapi-",
    "tvly-",
    "csk-",
    "esecret_",
)
_FULL_PREFIXED = tuple((p, re.compile(p.regex)) for p in PREFIXED)
_FULL_HINTED = tuple(
    (p, re.compile(p.regex), re.compile(rf"(?:^|_)(?:{p.hint})(?:_|$)")) for p in HINTED
)
_NAME_TYPE_RES = tuple((t, re.compile(rf"(?:^|_)(?:{w})(?:_|$)")) for t, w in _NAME_TYPES)
# Lower-case words one of which a line must hold for a hinted key to be in it.
HINT_LITERALS = (
    "mistral",
    "cohere",
    "co_api_key",
    "deepseek",
    "together",
    "pinecone",
    "azure_openai",
    "aoai",
    "azure_oai",
    "voyage",
    "wandb",
    "assemblyai",
    "assembly_ai",
    "deepgram",
    "ai21",
    "serpapi",
    "serp_api",
    "jina",
)


def find_keys(text: str) -> Iterator[KeyMatch]:
    """Every prefixed AI key in ``text`` (placeholders left out), in order."""
    starts: set[int] = set()
    for prefix in PREFIXES:
        at = text.find(prefix)
        while at >= 0:
            starts.add(at)
            at = text.find(prefix, at + 1)
    end = 0
    for start in sorted(starts):
        if start < end:
            continue
        match = _FIND.match(text, start)
        if match is None:
            continue
        end = match.end()
        group = match.lastgroup
        if group is None:  # pragma: no cover - every alternative is a named group
            continue
        pattern = PREFIXED[int(group[1:])]
        value = match.group(group)
        if not is_placeholder(value):
            yield KeyMatch(pattern.type, pattern.provider, value, match.start(), match.end())


# NAME = value, NAME: value, "NAME": "value", NAME := value, ENV NAME value (Dockerfile).
_ASSIGN = re.compile(
    r"""(?P<name>[A-Za-z_][A-Za-z0-9_.\-]*)["'`\]]*\s*(?::=|=>|=|:|\s)\s*["'`]?"""
    r"""(?P<value>[A-Za-z0-9_\-]{16,200})(?![A-Za-z0-9_\-]|\s*[=:])"""
)


def has_hint(text: str) -> bool:
    """Whether ``text`` names any provider whose keys need a hint (a cheap test before
    :func:`find_hinted` line by line)."""
    lowered = text.lower()
    return any(word in lowered for word in HINT_LITERALS)


def find_hinted(line: str) -> Iterator[tuple[str, str, int, str]]:
    """Keys without a prefix in one line, assigned to a name that says whose they are:
    ``(name, value, column, type)``."""
    if len(line) > 4000 or not has_hint(line):
        return
    for match in _ASSIGN.finditer(line):
        name, value = match.group("name"), match.group("value")
        kind = _classify_hinted(value, name)
        if kind is not None and not is_placeholder(value):
            yield name, value, match.start("value"), kind


def normalise_name(name: str) -> str:
    """``openaiApiKey`` / ``openai-api-key`` / ``OPENAI_API_KEY`` -> ``OPENAI_API_KEY``."""
    snake = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    return re.sub(r"[^A-Za-z0-9]+", "_", snake).strip("_").upper()


def type_for_name(name: str) -> str | None:
    """The AI credential type a variable name says it holds (``OPENAI_API_KEY`` ->
    ``openai-api-key``, ``HF_TOKEN`` -> ``huggingface-token``), or None (also for names
    that are about a key but are not one: ``OPENAI_API_BASE``, ``OPENAI_ORG_ID``)."""
    upper = normalise_name(name)
    if not _KEYISH.search(upper) or _NOT_KEY.search(upper):
        return None
    for kind, regex in _NAME_TYPE_RES:
        if regex.search(upper):
            return kind
    return None


def _classify_hinted(value: str, name_hint: str) -> str | None:
    upper = normalise_name(name_hint)
    if not _KEYISH.search(upper) or _NOT_KEY.search(upper):
        return None
    for pattern, full, hint in _FULL_HINTED:
        if hint.search(upper) and full.fullmatch(value):
            return pattern.type
    return None


def classify(value: str, name_hint: str | None = None) -> str | None:
    """The AI credential type of ``value`` (``openai-api-key`` ...), or None: a prefixed key
    is recognised by itself; a key without a prefix only with a ``name_hint`` naming its
    provider (``MISTRAL_API_KEY``); a placeholder never."""
    value = value.strip().strip("\"'`")
    if not value or len(value) > 512 or is_placeholder(value):
        return None
    for pattern, full in _FULL_PREFIXED:
        if full.fullmatch(value):
            return pattern.type
    if name_hint:
        return _classify_hinted(value, name_hint)
    return None
