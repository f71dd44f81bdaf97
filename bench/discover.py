"""Discovery throughput: files/s and MB/s of a full ``tether discover`` scan (every
scanner: MCP client configs, secrets, agent code, Kubernetes, CI workflows, cloud IAM) vs
detect-secrets alone on the same files, in the same run.

The tree is generated in a temporary directory: 3,000 files (``--quick``; 50,000 in the
full run) of the kinds a real estate holds, with a few planted agents and keys among them
— Python and TypeScript modules (some building agents or MCP servers), ``.env`` files
(some with AI-provider keys, most with placeholders), JSON and YAML configs (some MCP
client configs and Kubernetes manifests), GitHub workflows, Markdown docs, an AWS IAM
export. The baseline is detect-secrets' own ``SecretsCollection.scan_files`` with its
default plugins, one process (``num_processors=1``), over exactly the files Tether's walker
hands out; Tether is ``run_scan`` (walking, every scanner, creators) without the store.
Both are the best of three rounds, taking turns. Every run checks that Tether found the
planted agents (an empty result stops the bench).

    .venv/bin/python bench/discover.py [--quick] [--json]
"""

from __future__ import annotations

import json
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _common import TIMES, Result, expect, main, result

from tether.discover.interface import Warnings
from tether.discover.scan import run_scan
from tether.discover.walk import walk

ROUNDS = 3

_PY = '''"""Module {n}."""
import os
import json


def handler_{n}(event: dict) -> dict:
    value = os.environ.get("SETTING_{n}", "default")
    return {{"id": {n}, "value": value, "items": [json.dumps(event)]}}
'''
_AGENT_PY = '''from langchain.agents import create_react_agent
from langchain_openai import ChatOpenAI
from langchain_core.tools import tool


@tool
def lookup_{n}(query: str) -> str:
    """Look something up."""
    return query


agent = create_react_agent(ChatOpenAI(model="gpt-4o"), [lookup_{n}])
'''
_TS = """export function compute{n}(a: number, b: number): number {{
  const total = a + b;
  return total * {n};
}}
"""
_MCP_TS = """import {{ McpServer }} from "@modelcontextprotocol/sdk/server/mcp.js";
const server = new McpServer({{ name: "tickets-{n}", version: "1.0.0" }});
server.tool("open_ticket", {{}}, async () => ({{ content: [] }}));
"""
_ENV = "APP_NAME=service-{n}\nLOG_LEVEL=info\nOPENAI_API_KEY=sk-your-key-here\nPORT={port}\n"
_ENV_KEY = "APP_NAME=service-{n}\nANTHROPIC_API_KEY=sk-ant-api03-{key}-{tail}AA\n"
_JSON = '{{"name": "svc-{n}", "replicas": {r}, "features": ["a", "b"], "timeout": 30}}\n'
_MCP_JSON = (
    '{{"mcpServers": {{"files-{n}": {{"command": "npx", "args": ["-y", '
    '"@modelcontextprotocol/server-filesystem", "/srv/share-{n}"]}}}}}}\n'
)
_YAML = "name: svc-{n}\nreplicas: {r}\nlabels:\n  team: core\n"
_K8S = """apiVersion: apps/v1
kind: Deployment
metadata:
  name: agent-{n}
  namespace: ai
spec:
  template:
    spec:
      containers:
        - name: agent
          image: ghcr.io/acme/langgraph-agent:{n}
          env:
            - name: OPENAI_API_KEY
              valueFrom:
                secretKeyRef: {{name: openai, key: key}}
"""
_MD = "# Service {n}\n\nSet `OPENAI_API_KEY=sk-...` in your environment.\n\n" + "text " * 60


def generate(root: Path, files: int, seed: int = 7) -> int:
    """Write ``files`` files under ``root``; returns how many plant an agent."""
    rng = random.Random(seed)
    planted = 0
    kinds: list[tuple[str, str, Callable[[int], dict[str, object]], bool]] = [
        ("py", _PY, lambda n: {}, False),
        ("py", _AGENT_PY, lambda n: {}, True),
        ("ts", _TS, lambda n: {}, False),
        ("ts", _MCP_TS, lambda n: {}, True),
        ("env", _ENV, lambda n: {"port": 8000 + n % 1000}, False),
        ("env", _ENV_KEY, lambda n: {"key": _token(rng, 40), "tail": _token(rng, 40)}, False),
        ("json", _JSON, lambda n: {"r": n % 5}, False),
        (".mcp.json", _MCP_JSON, lambda n: {}, True),
        ("yaml", _YAML, lambda n: {"r": n % 5}, False),
        ("k8s.yaml", _K8S, lambda n: {}, True),
        ("md", _MD, lambda n: {}, False),
    ]
    weights = [30, 1, 20, 1, 6, 1, 12, 1, 12, 1, 15]
    for n in range(files):
        ext, template, fields, agent = rng.choices(kinds, weights)[0]
        directory = root / f"team{n % 37}" / f"svc{n % 211}" / f"d{n}"
        directory.mkdir(parents=True, exist_ok=True)
        name = ext if ext.startswith(".") else f"f{n}.{ext}"
        if ext == "env":
            name = ".env"
        text = template.format(n=n, **fields(n))
        if template in (_PY, _TS):  # ordinary modules are longer than a few lines
            text = "".join(template.format(n=n * 100 + i) for i in range(12))
        (directory / name).write_text(text, encoding="utf-8")
        planted += agent
    return planted


def _token(rng: random.Random, n: int) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    return "".join(rng.choice(alphabet) for _ in range(n))


def run(quick: bool) -> list[Result]:
    from detect_secrets import SecretsCollection
    from detect_secrets.settings import default_settings

    count = 3_000 if quick else 50_000  # --quick stays within about a minute
    with tempfile.TemporaryDirectory(prefix="tether-discover-bench-") as tmp:
        root = Path(tmp) / "estate"
        planted = generate(root, count)
        files = [str(f.path) for f in walk([root], Warnings())]
        size = sum(Path(f).stat().st_size for f in files)
        expect(len(files) == count, f"the walker gave {len(files)} of {count} files")
        print(f"tree: {count:,} files, {size / 1e6:.1f} MB, {planted} planted agents", flush=True)

        def tether() -> float:
            started = time.perf_counter()
            found = run_scan([root])
            took = time.perf_counter() - started
            agents = sum(1 for f in found.findings if f.is_agent)
            expect(agents >= planted, f"Tether found {agents} agents of {planted} planted")
            return took

        def detect_secrets_alone() -> float:
            started = time.perf_counter()
            with default_settings():
                collection = SecretsCollection()
                collection.scan_files(*files, num_processors=1)
            took = time.perf_counter() - started
            expect(len(json.dumps(collection.json())) > 2, "detect-secrets found nothing")
            return took

        ours: list[float] = []
        theirs: list[float] = []
        rounds = 2 if quick else ROUNDS
        for _ in range(rounds):
            ours.append(tether())
            theirs.append(detect_secrets_alone())
        best, base = min(ours), min(theirs)
    print(f"Tether {best:.2f} s, detect-secrets alone {base:.2f} s (best of {len(ours)})")
    return [
        result(f"scan {count // 1000}k files", count / best, count / base, "files/s"),
        result(f"scan {count // 1000}k MB/s", size / 1e6 / best, size / 1e6 / base, "MB/s"),
    ]


def footer(results: list[Result]) -> list[str]:
    return [
        "baseline = detect-secrets alone (default plugins, one process) on the same files",
        "Tether = every discovery scanner over the same tree (walk, parse, creators)",
        f"ratio = Tether ÷ baseline: below 1{TIMES} Tether is slower",
    ]


if __name__ == "__main__":
    main("discover", __doc__ or "", run, footer, baseline="detect-secrets")
