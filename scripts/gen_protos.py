"""Generate Python code for the project's own protos (`protos/`) with grpcio-tools.

    python scripts/gen_protos.py           # rewrite the checked-in generated code
    python scripts/gen_protos.py --check   # fail if the checked-in code is stale

Output lands in the package tree beside the hand-written code
(`protos/xds_ingress/demo/v1/greeter.proto` → `xds_ingress/demo/v1/greeter_pb2.py`,
`greeter_pb2.pyi`, `greeter_pb2_grpc.py`). The output depends only on the
.proto files and the grpcio-tools version, so regenerating twice gives the same
bytes and `--check` can compare byte for byte; a different grpcio-tools version
is a real difference (the generated code pins its runtime version).
"""

from __future__ import annotations

import argparse
import difflib
import sys
import tempfile
from collections.abc import Iterable
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

REPO = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO / "protos"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def proto_files(root: Path) -> list[Path]:
    # Sorted so protoc sees the same argument order on every machine.
    return sorted(root.rglob("*.proto"))


def output_folders(proto_root: Path) -> list[str]:
    """Top-level folders the protos generate into (`xds_ingress` for all of ours)."""
    return sorted({p.relative_to(proto_root).parts[0] for p in proto_files(proto_root)})


def generate(*, proto_root: Path, out: Path) -> None:
    protos = proto_files(proto_root)
    if not protos:
        raise SystemExit(f"gen_protos: no .proto files under {proto_root}")
    # The well-known types (google/protobuf/*.proto) ship inside grpcio-tools.
    well_known = resources.files("grpc_tools") / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{proto_root}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        # protoc records each file by its name below the -I root, not by this
        # machine's absolute path, so the output is the same everywhere.
        *(str(p) for p in protos),
    ]
    rc = protoc.main(args)
    if rc != 0:
        raise SystemExit(f"gen_protos: protoc failed with exit code {rc}")


def generated_files(root: Path, *, under: Iterable[str]) -> dict[str, bytes]:
    """Generated files below root (only in the given top-level folders), by relative path."""
    found: dict[str, bytes] = {}
    for top in under:
        base = root / top
        if not base.is_dir():
            continue
        for path in sorted(base.rglob("*")):
            if path.is_file() and path.name.endswith(GENERATED_SUFFIXES):
                found[path.relative_to(root).as_posix()] = path.read_bytes()
    return found


def check(*, proto_root: Path, repo: Path) -> list[str]:
    """Differences between the checked-in generated code and a fresh generation."""
    # Only the folders the protos generate into are compared, so generated
    # code from elsewhere (a vendored package, say) is not mistaken for stale.
    tops = output_folders(proto_root)
    with tempfile.TemporaryDirectory(prefix="gen_protos.") as tmp:
        fresh_root = Path(tmp)
        generate(proto_root=proto_root, out=fresh_root)
        fresh = generated_files(fresh_root, under=tops)
    current = generated_files(repo, under=tops)
    problems: list[str] = []
    for name in sorted(fresh.keys() - current.keys()):
        problems.append(f"missing: {name}")
    for name in sorted(current.keys() - fresh.keys()):
        problems.append(f"not generated from any .proto (stale?): {name}")
    for name in sorted(fresh.keys() & current.keys()):
        if fresh[name] != current[name]:
            diff = difflib.unified_diff(
                current[name].decode(errors="replace").splitlines(),
                fresh[name].decode(errors="replace").splitlines(),
                fromfile=f"checked-in/{name}",
                tofile=f"generated/{name}",
                lineterm="",
                n=1,
            )
            problems.append(f"differs: {name}\n" + "\n".join(list(diff)[:40]))
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--check",
        action="store_true",
        help="regenerate into a temporary folder and fail if the checked-in code differs",
    )
    args = parser.parse_args(argv)
    if args.check:
        problems = check(proto_root=PROTO_ROOT, repo=REPO)
        if problems:
            print("generated protobuf code is out of date; run `make protos`:", file=sys.stderr)
            for problem in problems:
                print(f"  {problem}", file=sys.stderr)
            return 1
        print("generated protobuf code is up to date")
        return 0
    generate(proto_root=PROTO_ROOT, out=REPO)
    for name in generated_files(REPO, under=output_folders(PROTO_ROOT)):
        print(f"wrote {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
