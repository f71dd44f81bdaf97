"""A discovery scan: walk the given paths, hand each file to the scanners that want it,
then name each finding's creator. A secret an agent finding carries is not reported again
as a loose credential.

The creator is the git author of the finding's line (``git blame``, one run per file with
findings, inside a git work tree), else the file's owner on this machine (``unix:NAME``).
A scanner that fails on a file is counted as a warning (``scanner-error``) and the scan
goes on. (Whether anybody accountable owns what was found is for reconciliation with the
registry: see :mod:`tether.discover.findings`.)
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from tether.discover.interface import Finding, Scanner, SourceFile, Warnings, fingerprint_key
from tether.discover.walk import MAX_BYTES, walk

__all__ = ["ScanResult", "default_scanners", "run_scan"]

_AUTHOR_MAIL = re.compile(r"^author-mail <([^>]*)>$")
_GIT = shutil.which("git")


@dataclass
class ScanResult:
    roots: list[Path]  # resolved
    findings: list[Finding]
    warnings: Warnings
    files: int = 0  # files handed to at least one scanner
    files_seen: int = 0  # files walked
    bytes: int = 0  # bytes of the files walked
    absolute: dict[str, str] = field(default_factory=dict)  # finding ID -> its file's path

    def to_dict(self) -> dict[str, Any]:
        return {
            "roots": [str(r) for r in self.roots],
            "files": self.files_seen,
            "bytes": self.bytes,
            "findings": [
                {**f.to_dict(), "location": self.absolute.get(f.id)} for f in self.findings
            ],
            "warnings": self.warnings.to_dict(),
        }


def default_scanners() -> list[Scanner]:
    """A fresh set of every scanner (some keep state over one scan)."""
    from tether.discover.agent_code import AgentCodeScanner
    from tether.discover.ci_workflows import CiWorkflowScanner
    from tether.discover.cloud_iam import CloudIamScanner
    from tether.discover.kubernetes import KubernetesScanner
    from tether.discover.mcp_configs import McpConfigScanner
    from tether.discover.secrets import SecretsScanner

    return [
        McpConfigScanner(),
        SecretsScanner(),
        AgentCodeScanner(),
        KubernetesScanner(),
        CiWorkflowScanner(),
        CloudIamScanner(),
    ]


def run_scan(
    paths: Sequence[Path],
    scanners: Sequence[Scanner] | None = None,
    *,
    progress: Callable[[SourceFile], None] | None = None,
    max_bytes: int = MAX_BYTES,
    key: bytes | None = None,
) -> ScanResult:
    """Scan ``paths`` (files or directories); never raises for what is in them.
    Credential fingerprints are keyed with ``key`` (the installation's discovery key, see
    :mod:`tether.discover.key`); without one, with a key of this process only."""
    if key is not None:
        with fingerprint_key(key):
            return run_scan(paths, scanners, progress=progress, max_bytes=max_bytes)
    chosen = list(scanners) if scanners is not None else default_scanners()
    warnings = Warnings()
    roots = [p.resolve() for p in paths if p.exists()]  # the walker counts the others
    result = ScanResult(roots=roots, findings=[], warnings=warnings)
    where: dict[str, tuple[SourceFile, Finding]] = {}
    for file in walk(list(paths), warnings, max_bytes):
        result.files_seen += 1
        with contextlib.suppress(OSError):
            result.bytes += file.path.stat().st_size
        wanted = [s for s in chosen if _wants(s, file, warnings)]
        result.files += bool(wanted)
        for scanner in wanted:
            for finding in _scan(scanner, file, warnings):
                where.setdefault(finding.id, (file, finding))
        if progress is not None:
            progress(file)
    _finish(chosen, where, roots, warnings)
    _drop_carried(where)
    blame = _Blame()
    for file, finding in where.values():
        named = finding
        if named.creator is None:
            named = replace(named, creator=blame.creator(file.path, finding.line))
        result.findings.append(named)
        result.absolute[named.id] = str(file.path)
    result.findings.sort(key=lambda f: (f.path, f.line or 0, f.kind, f.name))
    return result


def _finish(
    scanners: Sequence[Scanner],
    where: dict[str, tuple[SourceFile, Finding]],
    roots: Sequence[Path],
    warnings: Warnings,
) -> None:
    """What scanners that keep state over a scan found once they saw every file (e.g.
    Kubernetes bindings in one manifest for workloads in another)."""
    for scanner in scanners:
        finish = getattr(scanner, "finish", None)
        if finish is None:
            continue
        try:
            for finding in finish():
                where.setdefault(finding.id, (_orphan(finding, roots, warnings), finding))
        except Exception as exc:  # a scanner's bug must not end the scan
            warnings.add("scanner-error", f"{scanner.name}: {type(exc).__name__}")


def _drop_carried(where: dict[str, tuple[SourceFile, Finding]]) -> None:
    """A secret that an agent finding already carries (an MCP server's key in its config,
    a workload's key in its Secret) is reported with that agent, not a second time as a
    loose credential."""
    carried = {
        c.fingerprint
        for _, finding in where.values()
        if finding.is_agent
        for c in finding.credentials
        if c.plaintext
    }
    for finding_id, (_, finding) in list(where.items()):
        if (
            not finding.is_agent
            and finding.credentials
            and all(c.fingerprint in carried for c in finding.credentials)
        ):
            del where[finding_id]


def _wants(scanner: Scanner, file: SourceFile, warnings: Warnings) -> bool:
    try:
        return bool(scanner.wants(file.path))
    except Exception as exc:
        warnings.add("scanner-error", f"{file.relpath}: {scanner.name}: {type(exc).__name__}")
        return False


def _scan(scanner: Scanner, file: SourceFile, warnings: Warnings) -> Iterable[Finding]:
    try:
        return list(scanner.scan(file))
    except OSError:
        warnings.add("unreadable", file.relpath)
    except Exception as exc:  # a scanner's bug must not end the scan
        warnings.add("scanner-error", f"{file.relpath}: {scanner.name}: {type(exc).__name__}")
    return []


def _orphan(finding: Finding, roots: Sequence[Path], warnings: Warnings) -> SourceFile:
    """The file a finding made at the end of a scan refers to (under one of the roots)."""
    for root in roots:
        candidate = (root / finding.path) if root.is_dir() else root
        if candidate.exists():
            return SourceFile(path=candidate, root=root, warnings=warnings)
    base = roots[0] if roots else Path.cwd()
    return SourceFile(path=base / finding.path, root=base, warnings=warnings)


class _Blame:
    """Who wrote a line: git's author e-mail, else the file's owner on this machine."""

    def __init__(self) -> None:
        self._files: dict[Path, dict[int, str]] = {}

    def creator(self, path: Path, line: int | None) -> str | None:
        authors = self._files.get(path)
        if authors is None:
            authors = self._files[path] = _git_authors(path)
        if authors:
            found = authors.get(line or 1) or next(iter(authors.values()))
            if found:
                return found
        return _file_owner(path)


def _git_authors(path: Path) -> dict[int, str]:
    """Line -> author e-mail for a file in a git work tree (empty when not in one)."""
    top = _work_tree(path.parent)
    if top is None or _GIT is None:
        return {}
    try:
        done = subprocess.run(  # noqa: S603 - our own argv; the path comes after --
            [_GIT, "-C", str(top), "blame", "--line-porcelain", "--", str(path)],
            capture_output=True,
            timeout=20,
            check=False,
            env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"},
        )
    except (OSError, subprocess.SubprocessError):
        return {}
    if done.returncode != 0:
        return {}
    authors: dict[int, str] = {}
    line = 0
    for raw in done.stdout.decode("utf-8", "replace").splitlines():
        if raw and raw[0] in "0123456789abcdef" and len(raw.split()) >= 3 and len(raw) > 40:
            parts = raw.split()
            if len(parts[0]) == 40:
                line = int(parts[2])
                continue
        match = _AUTHOR_MAIL.match(raw)
        if match and line:
            mail = match.group(1).strip().lower()
            if "@" in mail and not mail.endswith("not.committed.yet"):
                authors[line] = mail
    return authors


@lru_cache(maxsize=1024)
def _work_tree(directory: Path) -> Path | None:
    if _GIT is None:
        return None
    try:
        done = subprocess.run(  # noqa: S603 - our own argv; the path comes after --
            [_GIT, "-C", str(directory), "rev-parse", "--show-toplevel"],
            capture_output=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return Path(done.stdout.decode().strip())


def _file_owner(path: Path) -> str | None:
    try:
        uid = path.stat().st_uid
        return f"unix:{pwd.getpwuid(uid).pw_name}"
    except (OSError, KeyError):
        return None
