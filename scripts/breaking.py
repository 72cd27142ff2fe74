"""Fails when the protos break the published contract of an earlier version.

    python scripts/breaking.py [--against GIT_REF_OR_DIR] [WORKSPACE]

Compares the buf workspace WORKSPACE (default: this checkout, uncommitted
edits included) with the same files at GIT_REF_OR_DIR: a git ref of this
repository, or a folder holding such a workspace. The default is the commit
where the current branch left `main` (`origin/main` when there is no local
`main`): on main itself that is HEAD, so only new edits are checked, and on a
branch, changes merged into main since it forked do not count against it.

Two checks, since clients use both the gRPC and the REST shapes:
  * `buf breaking` with the rules of buf.yaml: wire, JSON names and generated
    code.
  * Every RPC keeps its `google.api.http` bindings (REST paths, verbs and
    bodies), which buf does not compare.
"""

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from google.api import annotations_pb2
from google.protobuf import descriptor_pb2, text_format

ROOT = Path(__file__).resolve().parents[1]
BUF = ROOT / "node_modules" / ".bin" / "buf"


def git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.strip()


def default_base() -> str:
    """The commit where HEAD left main, or an exit saying what to pass instead."""
    for branch in ("main", "origin/main"):
        try:
            git("rev-parse", "--verify", "--quiet", f"{branch}^{{commit}}")
        except subprocess.CalledProcessError:
            continue
        try:
            return git("merge-base", "HEAD", branch)
        except subprocess.CalledProcessError:
            sys.exit(
                f"breaking: HEAD shares no history with {branch} (a shallow clone?); "
                "fetch more history or pass --against"
            )
    sys.exit("breaking: no main or origin/main to compare with; pass --against REF_OR_DIR")


def buf_input(against: str) -> str:
    """What buf reads the base from: the folder, or the commit of the git ref."""
    if Path(against).is_dir():
        return against
    try:
        commit = git("rev-parse", "--verify", "--quiet", f"{against}^{{commit}}")
    except subprocess.CalledProcessError:
        sys.exit(f"breaking: {against!r} is neither a folder nor a git ref")
    return f"{ROOT / '.git'}#ref={commit}"


def image(source: str | Path, output: Path) -> descriptor_pb2.FileDescriptorSet:
    """The protos of a buf input (a workspace folder or a git commit) as a buf image."""
    subprocess.run([BUF, "build", source, "-o", output], check=True)
    return descriptor_pb2.FileDescriptorSet.FromString(output.read_bytes())


def bindings(files: descriptor_pb2.FileDescriptorSet) -> dict[str, list[str]]:
    """Each RPC's HTTP bindings, by the RPC's full name, the primary one first."""
    found = {}
    for file in files.file:
        for service in file.service:
            for method in service.method:
                rule = method.options.Extensions[annotations_pb2.http]
                primary = type(rule)()
                primary.CopyFrom(rule)
                del primary.additional_bindings[:]
                found[f"{file.package}.{service.name}.{method.name}"] = [
                    text_format.MessageToString(one, as_one_line=True)
                    for one in (primary, *rule.additional_bindings)
                ]
    return found


def changed_bindings(base: dict[str, list[str]], current: dict[str, list[str]]) -> list[str]:
    """The RPCs of the base whose bindings changed; buf reports the removed ones."""
    problems = []
    for name, was in base.items():
        now = current.get(name)
        if now is None:
            continue
        if now[0] != was[0]:
            problems.append(f"{name}: HTTP binding changed from {{{was[0]}}} to {{{now[0]}}}")
        problems += [
            f"{name}: HTTP binding {{{gone}}} removed" for gone in was[1:] if gone not in now
        ]
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", help="a git ref or a workspace folder (default: see above)")
    parser.add_argument("workspace", nargs="?", type=Path, default=ROOT)
    args = parser.parse_args()
    against = args.against or default_base()
    print(f"breaking: comparing {args.workspace} with {against}")
    base = buf_input(against)
    buf = subprocess.run([BUF, "breaking", args.workspace, "--against", base])
    with tempfile.TemporaryDirectory() as scratch:
        base_bindings = bindings(image(base, Path(scratch) / "base.binpb"))
        current_bindings = bindings(image(args.workspace, Path(scratch) / "current.binpb"))
    problems = changed_bindings(base_bindings, current_bindings)
    for problem in problems:
        print(problem)
    return 1 if buf.returncode or problems else 0


if __name__ == "__main__":
    sys.exit(main())
