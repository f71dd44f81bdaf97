"""Python and JavaScript / TypeScript code that builds an agent or an MCP server.

Files: ``.py``; ``.js .mjs .cjs .jsx .ts .tsx .mts .cts`` (not ``.d.ts``, not ``.min.js``).

A file is reported (one :class:`Finding` of kind ``agent-code``) only when it *calls* a
constructor of a framework it *imports*; a framework named in a comment, a string or a
README is not code and is never reported.

Python is read with :mod:`ast` (a file that does not parse is a counted ``malformed``
warning). Imports are resolved (``from crewai import Agent as A``, ``import crewai``,
``from mcp.server.fastmcp import FastMCP``) and a call counts when it resolves to one of:

================  ==========================================================================
framework         modules → constructors
================  ==========================================================================
langchain         ``langchain*``: ``create_agent``, ``create_react_agent``,
                  ``create_tool_calling_agent``, ``AgentExecutor``, ``initialize_agent`` ...
langgraph         ``langgraph*``: ``StateGraph``, ``MessageGraph``, ``create_react_agent``,
                  ``create_supervisor``, ``create_swarm``
crewai            ``crewai``: ``Agent``, ``Crew``
autogen           ``autogen``, ``autogen_agentchat``, ``autogen_core``, ``autogen_ext``:
                  ``AssistantAgent``, ``UserProxyAgent``, ``ConversableAgent``,
                  ``GroupChat(Manager)``, ``RoundRobinGroupChat``, ``SelectorGroupChat`` ...
openai-agents     ``agents``: ``Agent``, ``RealtimeAgent``
llamaindex        ``llama_index*``: ``ReActAgent``, ``FunctionAgent``, ``AgentWorkflow`` ...
semantic-kernel   ``semantic_kernel*``: ``ChatCompletionAgent``, ``AzureAIAgent``,
                  ``AgentGroupChat``, ``Kernel`` ...
mcp               ``mcp.server*`` / ``fastmcp``: ``FastMCP``, ``MCPServer``, ``Server``
pydantic-ai,      ``pydantic_ai``: ``Agent``; ``smolagents``: ``CodeAgent``,
smolagents,       ``ToolCallingAgent``; ``google.adk``: ``Agent``, ``LlmAgent`` ...
google-adk
================  ==========================================================================

JS / TS is first masked (comments blanked, string and template contents blanked but kept
aside by offset), then imports (``import ... from``, ``require``, ``import()``) and calls
are matched on the masked code: ``@modelcontextprotocol/sdk/server/*`` (``McpServer``,
``Server``), ``fastmcp`` (``FastMCP``), ``@langchain/langgraph`` (``StateGraph``,
``createReactAgent`` ...), ``langchain`` / ``@langchain/*`` (``createAgent``,
``AgentExecutor`` ...), ``@openai/agents`` (``Agent``), ``@mastra/core`` (``Agent``),
``llamaindex`` (``agent``, ``ReActAgent`` ...).

``name``: the MCP server's name, else the first agent's ``name=`` (CrewAI: ``role=``),
else the file stem; ``line``: the line of that constructor call. ``detail``:
``language`` (python | javascript | typescript), ``frameworks``, ``builds`` (agent and / or
mcp-server), ``agents`` (names), ``tools`` (``@tool`` / ``@function_tool`` / ``@mcp.tool()``
/ ``@kernel_function`` decorated functions, ``Tool(name=...)``, ``server.tool("name")`` /
``registerTool("name")``, ``tool({name})``, names in ``tools=[...]``), ``models`` (literal
``model=`` / ``model_name=`` / ``llm=`` / ``model:`` values ...).

``access``: ``llm:<provider>`` from the provider clients imported (``openai``,
``langchain_anthropic``, ``@ai-sdk/google`` ...) and the model names (``gpt-*`` → openai,
``claude-*`` → anthropic, ``gemini-*`` → google, ``provider:model``); the OpenAI Agents SDK
is ``llm:openai`` when nothing else is named; ``shell`` when the code runs commands
(``subprocess``, ``os.system``, ``child_process``). Secrets are not reported here (the
secrets scanner does that).
"""

from __future__ import annotations

import ast
import bisect
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tether.discover.interface import Finding, SourceFile

__all__ = ["AgentCodeScanner"]

SCANNER = "agent-code"

_PY_SUFFIXES = frozenset({".py"})
_JS_SUFFIXES = frozenset({".js", ".mjs", ".cjs", ".jsx"})
_TS_SUFFIXES = frozenset({".ts", ".tsx", ".mts", ".cts"})
_MAX_ITEMS = 200  # names kept per list in detail

# --------------------------------------------------------------------------------------
# Frameworks and their constructors

_AGENT = "agent"
_SERVER = "mcp-server"

_CONSTRUCTORS: dict[str, dict[str, str]] = {
    "langchain": dict.fromkeys(
        (
            "create_agent",
            "create_react_agent",
            "create_tool_calling_agent",
            "create_openai_functions_agent",
            "create_openai_tools_agent",
            "create_structured_chat_agent",
            "create_json_chat_agent",
            "create_xml_agent",
            "create_self_ask_with_search_agent",
            "create_sql_agent",
            "create_pandas_dataframe_agent",
            "create_csv_agent",
            "initialize_agent",
            "AgentExecutor",
        ),
        _AGENT,
    ),
    "langgraph": dict.fromkeys(
        ("StateGraph", "MessageGraph", "create_react_agent", "create_supervisor", "create_swarm"),
        _AGENT,
    ),
    "crewai": dict.fromkeys(("Agent", "Crew"), _AGENT),
    "autogen": dict.fromkeys(
        (
            "AssistantAgent",
            "UserProxyAgent",
            "ConversableAgent",
            "GroupChat",
            "GroupChatManager",
            "RoundRobinGroupChat",
            "SelectorGroupChat",
            "Swarm",
            "MagenticOneGroupChat",
            "CodeExecutorAgent",
            "SocietyOfMindAgent",
            "GPTAssistantAgent",
            "MultimodalWebSurfer",
        ),
        _AGENT,
    ),
    "openai-agents": dict.fromkeys(("Agent", "RealtimeAgent"), _AGENT),
    "llamaindex": dict.fromkeys(
        (
            "ReActAgent",
            "FunctionAgent",
            "AgentWorkflow",
            "OpenAIAgent",
            "FunctionCallingAgent",
            "FunctionCallingAgentWorker",
            "AgentRunner",
            "CodeActAgent",
            "ReActAgentWorker",
            "StructuredPlannerAgent",
        ),
        _AGENT,
    ),
    "semantic-kernel": dict.fromkeys(
        (
            "ChatCompletionAgent",
            "OpenAIAssistantAgent",
            "AzureAssistantAgent",
            "AzureAIAgent",
            "OpenAIResponsesAgent",
            "AgentGroupChat",
            "BedrockAgent",
            "CopilotStudioAgent",
            "Kernel",
        ),
        _AGENT,
    ),
    "mcp": dict.fromkeys(("FastMCP", "MCPServer", "Server"), _SERVER),
    "pydantic-ai": dict.fromkeys(("Agent",), _AGENT),
    "smolagents": dict.fromkeys(("CodeAgent", "ToolCallingAgent", "MultiStepAgent"), _AGENT),
    "google-adk": dict.fromkeys(
        ("Agent", "LlmAgent", "SequentialAgent", "ParallelAgent", "LoopAgent"), _AGENT
    ),
}

_JS_CONSTRUCTORS: dict[str, dict[str, str]] = {
    "mcp": dict.fromkeys(("McpServer", "Server", "FastMCP"), _SERVER),
    "langgraph": dict.fromkeys(
        ("StateGraph", "MessageGraph", "createReactAgent", "createSupervisor", "createSwarm"),
        _AGENT,
    ),
    "langchain": dict.fromkeys(
        (
            "createAgent",
            "createReactAgent",
            "createToolCallingAgent",
            "createOpenAIFunctionsAgent",
            "createOpenAIToolsAgent",
            "createStructuredChatAgent",
            "createXmlAgent",
            "AgentExecutor",
            "initializeAgentExecutorWithOptions",
            "initializeAgentExecutor",
        ),
        _AGENT,
    ),
    "openai-agents": dict.fromkeys(("Agent", "RealtimeAgent"), _AGENT),
    "mastra": dict.fromkeys(("Agent",), _AGENT),
    "llamaindex": dict.fromkeys(
        ("agent", "multiAgent", "ReActAgent", "OpenAIAgent", "AnthropicAgent"), _AGENT
    ),
}


def _py_framework(module: str) -> str | None:
    """The framework a Python module belongs to (None: not one)."""
    top = module.split(".", 1)[0]
    if top.startswith("langgraph"):
        return "langgraph"
    if top.startswith("langchain"):
        return "langchain"
    if top in ("autogen", "autogen_agentchat", "autogen_core", "autogen_ext", "pyautogen"):
        return "autogen"
    if module == "google.adk" or module.startswith("google.adk."):
        return "google-adk"
    if module == "mcp.server" or module.startswith("mcp.server."):
        return "mcp"
    return {
        "crewai": "crewai",
        "agents": "openai-agents",
        "llama_index": "llamaindex",
        "semantic_kernel": "semantic-kernel",
        "fastmcp": "mcp",
        "pydantic_ai": "pydantic-ai",
        "smolagents": "smolagents",
    }.get(top)


def _js_framework(module: str) -> str | None:
    """The framework a JS / TS package belongs to (None: not one)."""
    if module.startswith("@modelcontextprotocol/sdk/server") or module == "fastmcp":
        return "mcp"
    if module.startswith("@langchain/langgraph"):
        return "langgraph"
    if module == "langchain" or module.startswith(("langchain/", "@langchain/")):
        return "langchain"
    if module.startswith("@openai/agents"):
        return "openai-agents"
    if module.startswith("@mastra/core"):
        return "mastra"
    if module == "llamaindex" or module.startswith(("llamaindex/", "@llamaindex/")):
        return "llamaindex"
    return None


_PROVIDERS: tuple[tuple[str, str], ...] = (
    ("anthropic", "anthropic"),
    ("azure", "azure-openai"),
    ("open_ai", "openai"),
    ("openai", "openai"),
    ("google_genai", "google"),
    ("google.generativeai", "google"),
    ("google.genai", "google"),
    ("google-genai", "google"),
    ("@google/generative-ai", "google"),
    ("@google/genai", "google"),
    ("@ai-sdk/google", "google"),
    ("vertexai", "google"),
    ("google_vertexai", "google"),
    ("gemini", "google"),
    ("mistral", "mistral"),
    ("ollama", "ollama"),
    ("groq", "groq"),
    ("cohere", "cohere"),
    ("bedrock", "aws-bedrock"),
    ("langchain_aws", "aws-bedrock"),
    ("@langchain/aws", "aws-bedrock"),
    ("huggingface", "huggingface"),
)
_MODEL_PROVIDERS: tuple[tuple[str, str], ...] = (
    ("gpt-", "openai"),
    ("gpt4", "openai"),
    ("chatgpt", "openai"),
    ("o1", "openai"),
    ("o3", "openai"),
    ("o4", "openai"),
    ("text-embedding", "openai"),
    ("claude", "anthropic"),
    ("gemini", "google"),
    ("gemma", "google"),
    ("mistral", "mistral"),
    ("mixtral", "mistral"),
    ("codestral", "mistral"),
    ("command-r", "cohere"),
)
_PROVIDER_NAMES = {
    "openai": "openai",
    "azure": "azure-openai",
    "azure_openai": "azure-openai",
    "anthropic": "anthropic",
    "google": "google",
    "google-gla": "google",
    "google-vertex": "google",
    "google_genai": "google",
    "google_vertexai": "google",
    "gemini": "google",
    "vertex_ai": "google",
    "mistral": "mistral",
    "mistralai": "mistral",
    "groq": "groq",
    "ollama": "ollama",
    "cohere": "cohere",
    "bedrock": "aws-bedrock",
    "bedrock-converse": "aws-bedrock",
}


def _provider_of_module(module: str, name: str = "") -> str | None:
    low = module.lower()
    if low == "agents" or low.startswith("@openai/agents"):
        return None  # a framework, not a client (see the default below)
    for marker, provider in _PROVIDERS:
        if marker in low:
            if provider == "openai" and name.startswith("Azure"):
                return "azure-openai"
            return provider
    return None


def _provider_of_model(model: str) -> str | None:
    low = model.strip().lower()
    for separator in (":", "/"):
        if separator in low:
            head = low.split(separator, 1)[0]
            if head in _PROVIDER_NAMES:
                return _PROVIDER_NAMES[head]
            low = low.rsplit(separator, 1)[-1]
    for prefix, provider in _MODEL_PROVIDERS:
        if low.startswith(prefix):
            return provider
    return None


# --------------------------------------------------------------------------------------
# What one file builds


@dataclass
class _Build:
    """A constructor call: its framework, what it builds, its name, its line."""

    framework: str
    builds: str
    name: str | None
    line: int
    order: int = 0


@dataclass
class _Report:
    language: str
    frameworks: list[str] = field(default_factory=list)
    builds: list[_Build] = field(default_factory=list)
    tools: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    providers: list[str] = field(default_factory=list)
    shell: bool = False

    def add(self, bucket: list[str], value: str | None) -> None:
        if value and value not in bucket and len(bucket) < _MAX_ITEMS:
            bucket.append(value)

    def finding(self, file: SourceFile) -> Finding | None:
        if not self.builds:
            return None
        builds = sorted(self.builds, key=lambda b: (b.line, b.order))
        servers = [b for b in builds if b.builds == _SERVER and b.name]
        named = [b for b in builds if b.name]
        chosen = servers[0] if servers else named[0] if named else builds[0]
        name = chosen.name or file.path.stem
        providers = list(self.providers)
        for model in self.models:
            self.add(providers, _provider_of_model(model))
        frameworks = list(self.frameworks)
        for build in builds:
            self.add(frameworks, build.framework)
        if "openai-agents" in frameworks and not providers:
            providers.append("openai")  # the SDK's default model provider
        access = [f"llm:{p}" for p in providers]
        if self.shell:
            access.append("shell")
        agents: list[str] = []
        for build in builds:
            self.add(agents, build.name)
        return Finding(
            kind="agent-code",
            name=name,
            scanner=SCANNER,
            path=file.relpath,
            line=chosen.line,
            access=tuple(access),
            detail={
                "language": self.language,
                "frameworks": sorted(frameworks),
                "builds": sorted({b.builds for b in builds}),
                "agents": agents,
                "tools": list(self.tools),
                "models": list(self.models),
            },
        )


# --------------------------------------------------------------------------------------
# Python


_PY_MARKERS = re.compile(
    r"langchain|langgraph|crewai|autogen|agents|llama_index|semantic_kernel|mcp|"
    r"pydantic_ai|smolagents|google\.adk|google import adk"
)
_TOOL_DECORATORS = frozenset(
    {"tool", "function_tool", "kernel_function", "tool_plain", "register_for_llm"}
)
_TOOL_CLASSES = frozenset(
    {"Tool", "FunctionTool", "StructuredTool", "DynamicTool", "BaseTool", "FunctionDeclaration"}
)
_TOOL_NAME_KWARGS = ("name", "name_override", "tool_name")
_MODEL_KWARGS = frozenset(
    {
        "model",
        "model_name",
        "model_id",
        "ai_model_id",
        "deployment_name",
        "azure_deployment",
        "llm_model",
        "llm",
    }
)
_SHELL_CALLS = frozenset({"system", "popen", "create_subprocess_exec", "create_subprocess_shell"})
_SHELL_CLASSES = frozenset(
    {"LocalCommandLineCodeExecutor", "DockerCommandLineCodeExecutor", "ShellTool"}
)
_CLASS_FACTORIES = frozenset(
    {"from_tools", "from_llm", "from_defaults", "from_agent_and_tools", "from_function", "create"}
)


def _dotted(node: ast.expr) -> list[str] | None:
    """``a.b.c`` → ``["a", "b", "c"]`` (iteratively: hostile nesting cannot recurse)."""
    parts: list[str] = []
    current: ast.expr = node
    while isinstance(current, ast.Attribute):
        parts.append(current.attr)
        current = current.value
    if not isinstance(current, ast.Name):
        return None
    parts.append(current.id)
    parts.reverse()
    return parts


def _terminal(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _literal(node: ast.expr | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def _kwarg(call: ast.Call, *names: str) -> ast.expr | None:
    for keyword in call.keywords:
        if keyword.arg in names:
            return keyword.value
    return None


class _PyImports:
    """Local names → (module, attribute) from the file's imports."""

    def __init__(self, tree: ast.Module) -> None:
        self.names: dict[str, tuple[str, str]] = {}
        self.modules: dict[str, str] = {}
        self.star: list[str] = []
        self.imported: list[tuple[str, str]] = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    self.imported.append((alias.name, ""))
                    if alias.asname:
                        self.modules[alias.asname] = alias.name
                    else:
                        top = alias.name.split(".", 1)[0]
                        self.modules.setdefault(top, top)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    self.imported.append((node.module, alias.name))
                    if alias.name == "*":
                        self.star.append(node.module)
                    else:
                        self.names[alias.asname or alias.name] = (node.module, alias.name)

    def resolve(self, node: ast.expr) -> tuple[str, str] | None:
        """(module, attribute) that ``node`` names, when it comes from an import."""
        parts = _dotted(node)
        if not parts:
            return None
        head, rest = parts[0], parts[1:]
        if head in self.names:
            module, attribute = self.names[head]
            if not rest:
                return module, attribute
            return ".".join([module, attribute, *rest[:-1]]), rest[-1]
        if head in self.modules and rest:
            return ".".join([self.modules[head], *rest[:-1]]), rest[-1]
        if not rest:
            for module in self.star:
                framework = _py_framework(module)
                if framework and head in _CONSTRUCTORS.get(framework, {}):
                    return module, head
        return None


def _constructor(imports: _PyImports, func: ast.expr) -> tuple[str, str, str] | None:
    """(framework, builds, class) when ``func`` is a framework constructor."""
    candidates = [func]
    if isinstance(func, ast.Attribute) and func.attr in _CLASS_FACTORIES:
        candidates.append(func.value)  # ReActAgent.from_tools(...)
    for candidate in candidates:
        resolved = imports.resolve(candidate)
        if resolved is None:
            continue
        module, attribute = resolved
        framework = _py_framework(module)
        if framework is None:
            continue
        builds = _CONSTRUCTORS.get(framework, {}).get(attribute)
        if builds is not None:
            return framework, builds, attribute
    return None


def _py_build_name(call: ast.Call, framework: str, cls: str) -> str | None:
    name = _literal(_kwarg(call, "name"))
    if name is None and framework == "crewai" and cls == "Agent":
        name = _literal(_kwarg(call, "role"))
    if name is None and framework == "mcp" and call.args:
        name = _literal(call.args[0])
    return name.strip() or None if name else None


class _PyScan:
    def __init__(self, tree: ast.Module, report: _Report) -> None:
        self.tree = tree
        self.report = report
        self.imports = _PyImports(tree)
        self.lists: dict[str, ast.expr] = {}
        self.tool_vars: dict[str, str] = {}  # variable → the name of the tool it holds
        self.order = 0

    def run(self) -> None:
        report = self.report
        for module, name in self.imports.imported:
            report.add(report.frameworks, _py_framework(module))
            report.add(report.providers, _provider_of_module(module, name))
            if module in ("subprocess", "pty") or module.startswith("subprocess."):
                report.shell = True
        for node in ast.walk(self.tree):  # first what names stand for
            if isinstance(node, ast.Assign):
                self.assigned(node)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                self.decorated(node)
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Call):
                self.call(node)
            elif isinstance(node, ast.Dict):
                for key, value in zip(node.keys, node.values, strict=False):
                    if _literal(key) == "model":
                        report.add(report.models, _literal(value))

    def assigned(self, node: ast.Assign) -> None:
        """``tools = [...]`` and ``search = SerperDevTool()`` / ``Tool(name=...)``."""
        for target in node.targets:
            if not isinstance(target, ast.Name):
                continue
            if isinstance(node.value, ast.List | ast.Tuple):
                self.lists[target.id] = node.value
            elif isinstance(node.value, ast.Call):
                name = self.tool_name(node.value)
                if name:
                    self.tool_vars[target.id] = name

    def decorated(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        for decorator in node.decorator_list:
            call = decorator if isinstance(decorator, ast.Call) else None
            target = call.func if call is not None else decorator
            if _terminal(target) not in _TOOL_DECORATORS:
                continue
            name = None
            if call is not None:
                name = _literal(_kwarg(call, *_TOOL_NAME_KWARGS))
                if name is None and call.args:
                    name = _literal(call.args[0])
            self.report.add(self.report.tools, name or node.name)
            self.tool_vars[node.name] = name or node.name

    def call(self, node: ast.Call) -> None:
        report = self.report
        found = _constructor(self.imports, node.func)
        if found is not None:
            framework, builds, cls = found
            self.order += 1
            name = _py_build_name(node, framework, cls)
            report.builds.append(_Build(framework, builds, name, node.lineno, self.order))
            tools = _kwarg(node, "tools")
            if isinstance(tools, ast.Name):
                tools = self.lists.get(tools.id, tools)
            if isinstance(tools, ast.List | ast.Tuple):
                for element in tools.elts:
                    report.add(report.tools, self.tool_name(element))
        self.models(node)
        terminal = _terminal(node.func)
        if self.is_tool(node):
            report.add(report.tools, self.tool_name(node))
        if terminal in ("add_tool", "register_function") and node.args:
            name = _literal(_kwarg(node, "name"))
            report.add(report.tools, name or _terminal(node.args[0]))
        resolved = self.imports.resolve(node.func)
        runs = resolved is not None and resolved[0] in ("os", "asyncio")
        if terminal in _SHELL_CLASSES or (runs and resolved and resolved[1] in _SHELL_CALLS):
            report.shell = True

    def models(self, node: ast.Call) -> None:
        """Literal model names: ``model=`` ..., ``init_chat_model("...")``,
        ``Agent("openai:gpt-4o")`` (pydantic-ai), ``OpenAIModel("gpt-4o")``."""
        report = self.report
        for keyword in node.keywords:
            if keyword.arg in _MODEL_KWARGS:
                report.add(report.models, _literal(keyword.value))
        terminal = _terminal(node.func) or ""
        takes_model = terminal in ("init_chat_model", "Agent", "LLM") or terminal.endswith("Model")
        model = _literal(node.args[0]) if node.args else None
        if not takes_model or not model or _literal(_kwarg(node, "model")) is not None:
            return
        if terminal != "Agent" or _provider_of_model(model):
            report.add(report.models, model)

    @staticmethod
    def is_tool(node: ast.Call) -> bool:
        """``Tool(name=...)``, ``FunctionTool.from_defaults(fn=...)`` ..."""
        if _terminal(node.func) in _TOOL_CLASSES:
            return True
        return (
            isinstance(node.func, ast.Attribute)
            and _terminal(node.func.value) in _TOOL_CLASSES
            and node.func.attr in _CLASS_FACTORIES
        )

    def tool_name(self, node: ast.expr) -> str | None:
        if isinstance(node, ast.Name) and node.id in self.tool_vars:
            return self.tool_vars[node.id]
        if isinstance(node, ast.Call):
            name = _literal(_kwarg(node, *_TOOL_NAME_KWARGS))
            if name:
                return name
            fn = _kwarg(node, "fn", "func", "function")
            if fn is not None:
                return _terminal(fn)
            factory = isinstance(node.func, ast.Attribute) and node.func.attr in _CLASS_FACTORIES
            if node.args and factory:
                return _terminal(node.args[0])
            if _terminal(node.func) in _TOOL_CLASSES:
                return None
            return _terminal(node.func)
        return _terminal(node)


def _scan_python(file: SourceFile, text: str) -> _Report | None:
    if not _PY_MARKERS.search(text):
        return None
    try:
        tree = ast.parse(text, filename=file.relpath)
    except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError) as exc:
        line = getattr(exc, "lineno", None)
        where = f" at line {line}" if line else ""
        file.warn("malformed", f"python: {type(exc).__name__}{where}")
        return None
    report = _Report("python")
    try:
        _PyScan(tree, report).run()
    except RecursionError:  # pragma: no cover - ast.walk is iterative
        file.warn("malformed", "python: nested too deeply")
        return None
    return report


# --------------------------------------------------------------------------------------
# JavaScript / TypeScript


_JS_MARKERS = re.compile(
    r"@modelcontextprotocol/sdk|fastmcp|langchain|@openai/agents|@mastra/core|llamaindex"
)
_JS_NEXT = re.compile(r"//|/\*|[\"'`/{}]")
_REGEX_BEFORE = frozenset("(,=:[!&|?{};+-*%<>~^")
_REGEX_KEYWORDS = frozenset(
    {
        "return",
        "typeof",
        "instanceof",
        "in",
        "of",
        "new",
        "delete",
        "void",
        "throw",
        "case",
        "do",
        "else",
        "yield",
        "await",
    }
)
_NOT_NEWLINE = re.compile(r"[^\n]")
_MAX_CALL_SPAN = 20000  # characters read for one call's arguments
_MAX_CALLS = 100  # constructor / tool calls read per file (hostile files stay linear)
_MAX_BINDINGS = 50  # framework bindings looked for per file


def _blank(text: str) -> str:
    return _NOT_NEWLINE.sub(" ", text)


@dataclass
class _Masked:
    """JS / TS with comments and literal contents blanked (same length, same lines)."""

    code: str
    literals: dict[int, str]  # offset of the opening quote → the literal's text
    broken: bool = False

    def literal_at(self, pos: int) -> str | None:
        return self.literals.get(pos)


class _JsLexer:
    def __init__(self, text: str) -> None:
        self.text = text
        self.out: list[str] = []
        self.literals: dict[int, str] = {}
        self.templates: list[int] = []  # brace depth inside each open ${ ... }
        self.broken = False

    def run(self) -> _Masked:
        text = self.text
        i = 0
        in_template = False
        while i < len(text):
            if in_template:
                i, in_template = self.template_text(i)
                continue
            match = _JS_NEXT.search(text, i)
            if match is None:
                self.out.append(text[i:])
                break
            self.out.append(text[i : match.start()])
            i, in_template = self.step(match.group(), match.start())
        if in_template or self.templates:
            self.broken = True
        return _Masked("".join(self.out), self.literals, self.broken)

    def step(self, mark: str, j: int) -> tuple[int, bool]:
        """Handle the interesting text ``mark`` at ``j``: (where to go on, in template text)."""
        text = self.text
        if mark in ("//", "/*"):
            end = text.find("\n" if mark == "//" else "*/", j + 2)
            if end < 0:
                self.broken = self.broken or mark == "/*"
                end = len(text)
            elif mark == "/*":
                end += 2
            self.out.append(_blank(text[j:end]))
            return end, False
        if mark in ("'", '"'):
            return self.string(j, mark), False
        if mark == "`":
            self.static_template(j)
            self.out.append("`")
            return j + 1, True
        if mark == "{":
            if self.templates:
                self.templates[-1] += 1
            self.out.append("{")
            return j + 1, False
        if mark == "}":
            self.out.append("}")
            if self.templates:
                if self.templates[-1] == 0:
                    self.templates.pop()
                    return j + 1, True
                self.templates[-1] -= 1
            return j + 1, False
        return self.slash(j), False  # "/": a regular expression or a division

    def string(self, start: int, quote: str) -> int:
        text = self.text
        n = len(text)
        k = start + 1
        while k < n:
            char = text[k]
            if char == "\\":
                k += 2
                continue
            if char in (quote, "\n"):
                break
            k += 1
        k = min(k, n)
        content = text[start + 1 : k]
        self.literals[start] = content.replace("\\" + quote, quote)
        if k < n and text[k] == quote:
            self.out.append(quote + _blank(content) + quote)
            return k + 1
        self.out.append(quote + _blank(content))  # unterminated: ends at the line
        return k

    def template_end(self, i: int) -> int:
        """The offset of the closing backtick or ``${`` of template text from ``i``."""
        text = self.text
        n = len(text)
        k = i
        while k < n:
            char = text[k]
            if char == "\\":
                k += 2
                continue
            if char == "`" or (char == "$" and text.startswith("${", k)):
                return k
            k += 1
        return n

    def static_template(self, start: int) -> None:
        end = self.template_end(start + 1)
        if end < len(self.text) and self.text[end] == "`":
            self.literals[start] = self.text[start + 1 : end]

    def template_text(self, i: int) -> tuple[int, bool]:
        text = self.text
        end = self.template_end(i)
        end = min(end, len(text))
        self.out.append(_blank(text[i:end]))
        if end >= len(text):
            self.broken = True
            return len(text), False
        if text[end] == "`":
            self.out.append("`")
            return end + 1, False
        self.out.append("${")
        self.templates.append(0)
        return end + 2, False

    def slash(self, j: int) -> int:
        text = self.text
        if not self.regex_allowed(j):
            self.out.append("/")
            return j + 1
        k = j + 1
        n = len(text)
        in_class = False
        while k < n:
            char = text[k]
            if char == "\\":
                k += 2
                continue
            if char == "\n":
                self.out.append("/")  # not a regular expression after all
                return j + 1
            if char == "[":
                in_class = True
            elif char == "]":
                in_class = False
            elif char == "/" and not in_class:
                break
            k += 1
        if k >= n:
            self.out.append("/")
            return j + 1
        self.out.append("/" + _blank(text[j + 1 : k]) + "/")
        return k + 1

    def regex_allowed(self, j: int) -> bool:
        k = j - 1
        text = self.text
        while k >= 0 and text[k] in " \t\r\n":
            k -= 1
        if k < 0:
            return True
        previous = text[k]
        if previous in _REGEX_BEFORE:
            return True
        if previous.isalnum() or previous in "_$":
            start = k
            while start > 0 and (text[start - 1].isalnum() or text[start - 1] in "_$"):
                start -= 1
            return text[start : k + 1] in _REGEX_KEYWORDS
        return False


_STR = r"(?P<q>[\"'`])"
_JS_IMPORT = re.compile(
    r"(?<![\w$.])import\s+(?:type\s+)?(?P<clause>[\w$*{}\s,]{1,2000}?)\s+from\s*" + _STR
)
_JS_IMPORT_BARE = re.compile(r"(?<![\w$.])import\s*(?:\(\s*)?" + _STR)
_JS_IMPORT_EQUALS = re.compile(r"(?<![\w$.])import\s+(?P<lhs>[\w$]+)\s*=\s*require\s*\(\s*" + _STR)
_JS_REQUIRE_BIND = re.compile(
    r"(?<![\w$.])(?:const|let|var)\s+(?P<lhs>[\w$]+|\{[^{}]{0,2000}\})\s*=\s*(?:await\s+)?"
    r"(?:require\s*\(|import\s*\()\s*" + _STR
)
_JS_REQUIRE = re.compile(r"(?<![\w$.])require\s*\(\s*" + _STR)
_JS_TOOL_CALL = re.compile(r"\.\s*(?:tool|registerTool)\s*\(\s*" + _STR)
_JS_TOOL_FACTORY = re.compile(
    r"(?<![\w$.])(?:new\s+)?(?:tool|createTool|DynamicStructuredTool|DynamicTool|FunctionTool"
    r"|StructuredTool)\s*(?:<[^<>()]{0,200}>)?\s*\("
)
_JS_NAME_FIELD = re.compile(r"(?<![\w$.])(?:name|id)\s*:\s*" + _STR)
_JS_AGENT_NAME = re.compile(r"(?<![\w$.])name\s*:\s*" + _STR)
_JS_MODEL_FIELD = re.compile(r"(?<![\w$.])(?:model|modelName|modelId|model_name)\s*:\s*" + _STR)
_JS_MODEL_CALL = re.compile(
    r"(?<![\w$.])(?P<provider>openai|anthropic|google|mistral|groq|azure|bedrock|ollama)"
    r"(?:\.chat)?\s*\(\s*" + _STR
)
_JS_TOOLS_LIST = re.compile(r"(?<![\w$.])tools\s*:\s*(?P<open>\[)")
_JS_TOOLS_REF = re.compile(r"(?<![\w$.])tools\s*:\s*(?P<name>[\w$]+)|[{,]\s*tools\s*[,}]")
_JS_ASSIGNED = re.compile(r"(?:const|let|var)\s+([\w$]+)\s*(?::[^=;]+)?=\s*(?:await\s+)?$")
_JS_SHELL = ("child_process", "node:child_process", "execa", "shelljs")


@dataclass
class _JsBinding:
    module: str
    exported: str  # "*" for a namespace / whole module, "default" for a default import


def _parse_clause(clause: str, module: str, bindings: dict[str, _JsBinding]) -> None:
    """``A, { B as C, type D }`` / ``* as ns`` → local bindings."""
    clause = clause.strip()
    named = re.search(r"\{([^{}]*)\}", clause)
    rest = re.sub(r"\{[^{}]*\}", "", clause)
    if named is not None:
        for item in named.group(1).split(","):
            words = item.replace("type ", " ").split()
            if not words:
                continue
            exported = words[0]
            local = words[2] if len(words) >= 3 and words[1] == "as" else exported
            bindings[local] = _JsBinding(module, exported)
    namespace = re.search(r"\*\s*as\s+([\w$]+)", rest)
    if namespace is not None:
        bindings[namespace.group(1)] = _JsBinding(module, "*")
        rest = rest.replace(namespace.group(0), "")
    for word in re.findall(r"[\w$]+", rest):
        if word != "type":
            bindings[word] = _JsBinding(module, "default")


def _matching(code: str, open_at: int) -> int:
    """The offset just after the bracket closing the one at ``open_at`` (bounded)."""
    pairs = {"(": ")", "[": "]", "{": "}"}
    stack: list[str] = []
    limit = min(len(code), open_at + _MAX_CALL_SPAN)
    for k in range(open_at, limit):
        char = code[k]
        if char in pairs:
            stack.append(pairs[char])
        elif stack and char == stack[-1]:
            stack.pop()
            if not stack:
                return k + 1
    return limit


class _JsScan:
    def __init__(self, text: str, masked: _Masked, report: _Report) -> None:
        self.text = text
        self.masked = masked
        self.code = masked.code
        self.report = report
        self.bindings: dict[str, _JsBinding] = {}
        self.modules: list[str] = []
        self.tool_vars: dict[str, str] = {}  # variable → the name of the tool it holds
        self.declared: dict[str, int | None] = {}  # list variable → offset of its "["
        self.newlines = [m.start() for m in re.finditer("\n", text)]

    def line(self, pos: int) -> int:
        return bisect.bisect_left(self.newlines, pos) + 1

    def literal(self, match: re.Match[str]) -> str | None:
        return self.masked.literal_at(match.start("q"))

    def run(self) -> None:
        self.imports()
        report = self.report
        for module in self.modules:
            report.add(report.frameworks, _js_framework(module))
            report.add(report.providers, _provider_of_module(module))
            if module in _JS_SHELL:
                report.shell = True
        for match in _JS_TOOL_CALL.finditer(self.code):
            report.add(report.tools, self.literal(match))
        for count, match in enumerate(_JS_TOOL_FACTORY.finditer(self.code)):
            if count >= _MAX_CALLS:
                break
            span = self.code[match.end() - 1 : _matching(self.code, match.end() - 1)]
            field_match = _JS_NAME_FIELD.search(span)
            if field_match is None:
                continue
            name = self.masked.literal_at(match.end() - 1 + field_match.start("q"))
            report.add(report.tools, name)
            variable = _JS_ASSIGNED.search(self.code, max(0, match.start() - 200), match.start())
            if variable is not None and name:
                self.tool_vars[variable.group(1)] = name
        self.constructors()
        for match in _JS_MODEL_FIELD.finditer(self.code):
            report.add(report.models, self.literal(match))
        for match in _JS_MODEL_CALL.finditer(self.code):
            local = match.group("provider")
            binding = self.bindings.get(local)
            if binding is not None and binding.module.startswith("@ai-sdk/"):
                report.add(report.models, self.literal(match))

    def imports(self) -> None:
        code = self.code
        for match in _JS_IMPORT.finditer(code):
            module = self.literal(match)
            if module is not None:
                self.modules.append(module)
                _parse_clause(match.group("clause"), module, self.bindings)
        for pattern in (_JS_IMPORT_EQUALS, _JS_REQUIRE_BIND):
            for match in pattern.finditer(code):
                module = self.literal(match)
                if module is None:
                    continue
                self.modules.append(module)
                lhs = match.group("lhs")
                if lhs.startswith("{"):
                    for item in lhs.strip("{} \n").split(","):
                        exported, _, local = item.partition(":")
                        exported, local = exported.strip(), (local or exported).strip()
                        if re.fullmatch(r"[\w$]+", exported) and re.fullmatch(r"[\w$]+", local):
                            self.bindings[local] = _JsBinding(module, exported)
                else:
                    self.bindings[lhs] = _JsBinding(module, "*")
        for pattern in (_JS_IMPORT_BARE, _JS_REQUIRE):
            for match in pattern.finditer(code):
                module = self.literal(match)
                if module is not None and module not in self.modules:
                    self.modules.append(module)

    def constructors(self) -> None:
        order = 0
        bindings = [
            (local, binding)
            for local, binding in self.bindings.items()
            if _js_framework(binding.module) is not None
        ]
        for local, binding in bindings[:_MAX_BINDINGS]:
            framework = _js_framework(binding.module) or ""
            table = _JS_CONSTRUCTORS.get(framework, {})
            if binding.exported == "*":
                targets = [(rf"{re.escape(local)}\s*\.\s*{name}", name) for name in table]
            elif binding.exported in table:
                targets = [(re.escape(local), binding.exported)]
            else:
                continue
            for expression, exported in targets:
                pattern = re.compile(
                    r"(?<![\w$.])(?:new\s+)?" + expression + r"(?![\w$])"
                    r"\s*(?:<[^<>()]{0,200}>)?\s*(?:\.\s*[\w$]+\s*)?\("
                )
                for match in pattern.finditer(self.code):
                    if order >= _MAX_CALLS:
                        return
                    order += 1
                    self.build(framework, table[exported], match.end() - 1, match.start(), order)

    def build(self, framework: str, builds: str, open_at: int, start: int, order: int) -> None:
        end = _matching(self.code, open_at)
        span = self.code[open_at:end]
        name = None
        found = _JS_AGENT_NAME.search(span)
        if found is not None:
            name = self.masked.literal_at(open_at + found.start("q"))
        line = self.line(start)
        self.report.builds.append(_Build(framework, builds, name or None, line, order))
        self.tools_in(span)

    def tools_in(self, span: str) -> None:
        report = self.report
        lists: list[tuple[str, int]] = []
        for match in _JS_TOOLS_LIST.finditer(span):
            lists.append((span, match.start("open")))
        for match in _JS_TOOLS_REF.finditer(span):
            name = match.group("name") or "tools"
            if name not in self.declared:
                declared = re.search(
                    r"(?<![\w$.])(?:const|let|var)\s+"
                    + re.escape(name)
                    + r"\s*(?::[^=;]{0,200})?=\s*\[",
                    self.code,
                )
                self.declared[name] = None if declared is None else declared.end() - 1
            open_at = self.declared[name]
            if open_at is not None:
                lists.append((self.code, open_at))
        for source, open_at in lists:
            inner = source[open_at + 1 : _matching(source, open_at) - 1]
            for element in _split_top(inner):
                word = re.match(r"\s*(?:new\s+)?([\w$.]+)\s*(\()?", element)
                if word is None or word.group(1) in ("tool", "createTool"):
                    continue
                local = word.group(1).rsplit(".", 1)[-1]
                report.add(report.tools, self.tool_vars.get(local, local))


def _split_top(inner: str) -> Iterable[str]:
    """Split ``inner`` at its top-level commas."""
    depth = 0
    start = 0
    for k, char in enumerate(inner):
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == "," and depth == 0:
            yield inner[start:k]
            start = k + 1
    yield inner[start:]


def _scan_js(file: SourceFile, text: str, language: str) -> _Report | None:
    if not _JS_MARKERS.search(text):
        return None
    masked = _JsLexer(text).run()
    report = _Report(language)
    _JsScan(text, masked, report).run()
    if masked.broken:
        file.warn("malformed", f"{language}: unterminated comment, string or template")
    return report


# --------------------------------------------------------------------------------------
# The scanner


def _language(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith((".d.ts", ".d.mts", ".d.cts", ".min.js")):
        return None
    suffix = path.suffix.lower()
    if suffix in _PY_SUFFIXES:
        return "python"
    if suffix in _JS_SUFFIXES:
        return "javascript"
    if suffix in _TS_SUFFIXES:
        return "typescript"
    return None


class AgentCodeScanner:
    """Code that builds agents or MCP servers (see the module docstring)."""

    name = SCANNER

    def wants(self, path: Path) -> bool:
        return _language(path) is not None

    def scan(self, file: SourceFile) -> Iterator[Finding]:
        language = _language(file.path)
        if language is None:
            return
        text = file.read()
        if text is None:
            return
        report = _scan_python(file, text) if language == "python" else None
        if language != "python":
            report = _scan_js(file, text, language)
        if report is None:
            return
        found = report.finding(file)
        if found is not None:
            yield found
