#!/usr/bin/env python3
"""A Python client for the denylist sidecar, over its Unix socket, with grpcio.

    denylist_client.py verify TOKEN [TOKEN ...]
    denylist_client.py check --issuer ISS [--subject SUB] [--jti JTI] [--session SID] [--kid KID]
    denylist_client.py watch TOKEN            (or: watch --issuer ISS --subject SUB [--issued-at IAT])
    denylist_client.py status

The socket is `--socket`, else `$DENYLIST_SOCKET`, else /var/run/denylist/sidecar.sock.
The channel is grpcio's default one for a Unix socket, `grpc.insecure_channel("unix:PATH")`:
nothing special is needed to talk to the sidecar.

Every answer is printed as one JSON line: `{"rpc": "Verify", "response": {...}}`, where
`response` is the protobuf JSON mapping of the answer with the .proto field names
(`denylist_sequence`, not `denylistSequence`; 64-bit integers are strings, enums are
names). `watch` prints `{"rpc": "Watch", "open": true}` once the sidecar has accepted the
stream, then one line per `RevocationNotice`, then `{"rpc": "Watch", "end": "OK"}`.
A failed call prints `{"rpc": ..., "error": {"code": ..., "message": ...}}` and a line on
stderr.

Exit status: 0 when every token is valid (verify), the subject is not revoked (check), a
notice arrived (watch); 2 when the sidecar answered "invalid" or "revoked"; 1 when a call
failed or the arguments are wrong.

The Python stubs are compiled from the .proto files (proto/denylist/v1/ in the repository,
or `--proto-dir` / `$DENYLIST_PROTO_DIR`) with grpcio-tools into a temporary directory at
start, so nothing generated is kept in the repository. A service would generate them once
at build time instead (see README.md beside this file).
"""

from __future__ import annotations

import argparse
import atexit
import importlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from types import ModuleType

DEFAULT_SOCKET = "/var/run/denylist/sidecar.sock"
# The repository's proto/ directory, two levels above examples/python/.
DEFAULT_PROTO_DIR = Path(__file__).resolve().parent.parent.parent / "proto"
PROTO_FILES = ["denylist/v1/events.proto", "denylist/v1/verifier.proto"]

# Exit statuses.
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_NEGATIVE = 2


class ClientError(Exception):
    """A problem that ends the program with a one-line message and exit status 1."""


def load_stubs(proto_dir: Path) -> tuple[ModuleType, ModuleType]:
    """Compiles the denylist protos into a temporary directory and imports them.

    Returns the `verifier_pb2` (messages) and `verifier_pb2_grpc` (stub) modules.
    """
    # Imported here so that `--help` works without grpcio-tools installed.
    from grpc_tools import protoc

    if not (proto_dir / "denylist/v1/verifier.proto").is_file():
        raise ClientError(
            f"no denylist/v1/verifier.proto under {proto_dir}: pass --proto-dir (or set "
            "DENYLIST_PROTO_DIR) to the repository's proto/ directory"
        )
    out = tempfile.mkdtemp(prefix="denylist-stubs-")
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    # google/protobuf/struct.proto ships inside grpcio-tools.
    well_known = Path(protoc.__file__).resolve().parent / "_proto"
    status = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{proto_dir}",
            f"-I{well_known}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            *PROTO_FILES,
        ]
    )
    if status != 0:
        raise ClientError(f"compiling the protos under {proto_dir} failed (protoc exit {status})")
    # The generated modules import each other as `denylist.v1.*` (a namespace package).
    sys.path.insert(0, out)
    pb2 = importlib.import_module("denylist.v1.verifier_pb2")
    pb2_grpc = importlib.import_module("denylist.v1.verifier_pb2_grpc")
    return pb2, pb2_grpc


def open_channel(args: argparse.Namespace):
    """The channel to the sidecar: the Unix socket, unless `--target` names another."""
    import grpc

    target = args.target or f"unix:{args.socket}"
    if args.authority:
        # What Java and Swift clients send: the socket path itself as `:authority`.
        return grpc.insecure_channel(target, options=[("grpc.default_authority", args.authority)])
    # grpcio's default: C-core sends the percent-encoded socket path as `:authority`.
    return grpc.insecure_channel(target)


def to_json(message) -> dict:
    """The protobuf JSON mapping of `message`, with .proto field names and defaults shown."""
    from google.protobuf import json_format

    return json_format.MessageToDict(
        message,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
    )


def emit(line: dict) -> None:
    """Prints one JSON line and flushes, so a reader sees it at once (Watch is long-lived)."""
    print(json.dumps(line, separators=(",", ":")), flush=True)


def rpc_failed(rpc: str, error) -> int:
    """Reports a failed call on stdout (JSON) and stderr (one line); returns exit status 1."""
    code = error.code().name if error.code() is not None else "UNKNOWN"
    message = error.details() or ""
    emit({"rpc": rpc, "error": {"code": code, "message": message}})
    print(f"denylist_client: {rpc} failed: {code}: {message}", file=sys.stderr)
    return EXIT_FAILED


def cmd_verify(args, pb2, stub) -> int:
    """Verifies each token; exit 2 if any is invalid."""
    status = EXIT_OK
    for token in args.tokens:
        answer = stub.Verify(pb2.VerifyRequest(token=token), timeout=args.timeout)
        emit({"rpc": "Verify", "response": to_json(answer)})
        if not answer.valid:
            status = EXIT_NEGATIVE
    return status


def cmd_check(args, pb2, stub) -> int:
    """Asks whether a token with these claims is revoked; exit 2 if it is."""
    request = pb2.CheckRequest(
        issuer=args.issuer,
        subject=args.subject or "",
        jti=args.jti or "",
        session=args.session or "",
        kid=args.kid or "",
    )
    if args.issued_at is not None:
        request.issued_at = args.issued_at
    answer = stub.Check(request, timeout=args.timeout)
    emit({"rpc": "Check", "response": to_json(answer)})
    return EXIT_NEGATIVE if answer.revoked else EXIT_OK


def cmd_watch(args, pb2, stub) -> int:
    """Opens a Watch stream and prints each notice until the sidecar ends the stream."""
    import grpc

    if args.token:
        request = pb2.WatchRequest(token=args.token)
    elif args.issuer and (args.subject or args.session):
        request = pb2.WatchRequest(
            issuer=args.issuer, subject=args.subject or "", session=args.session or ""
        )
        if args.issued_at is not None:
            request.issued_at = args.issued_at
    else:
        raise ClientError("watch needs a TOKEN, or --issuer with --subject or --session")
    # No deadline: a watch lasts as long as the connection it guards.
    call = stub.Watch(request)
    # Response headers arrive once the sidecar has registered the watcher; a refusal
    # (e.g. an invalid token) ends the call instead, and iterating raises it below.
    call.initial_metadata()
    if not (call.done() and call.code() != grpc.StatusCode.OK):
        emit({"rpc": "Watch", "open": True})
    notices = 0
    try:
        for notice in call:
            notices += 1
            emit({"rpc": "Watch", "response": to_json(notice)})
    except KeyboardInterrupt:
        call.cancel()
        return 130
    emit({"rpc": "Watch", "end": "OK"})
    return EXIT_OK if notices else EXIT_NEGATIVE


def cmd_status(args, pb2, stub) -> int:
    """Prints the sidecar's status; exit 2 when it is not ready."""
    answer = stub.Status(pb2.StatusRequest(), timeout=args.timeout)
    emit({"rpc": "Status", "response": to_json(answer)})
    return EXIT_OK if answer.ready else EXIT_NEGATIVE


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="denylist_client.py",
        description="Ask a denylist sidecar over its Unix socket (gRPC, denylist.v1).",
    )
    parser.add_argument(
        "--socket",
        default=os.environ.get("DENYLIST_SOCKET") or DEFAULT_SOCKET,
        help="the sidecar's Unix socket (default: $DENYLIST_SOCKET, else %(default)s)",
    )
    parser.add_argument(
        "--target",
        help="any gRPC target instead of the socket, e.g. 127.0.0.1:50151 (the TCP listener)",
    )
    parser.add_argument(
        "--authority",
        help="send this :authority instead of grpcio's default (e.g. the raw socket path, as Java does)",
    )
    parser.add_argument(
        "--proto-dir",
        type=Path,
        default=Path(os.environ.get("DENYLIST_PROTO_DIR") or DEFAULT_PROTO_DIR),
        help="directory holding denylist/v1/*.proto (default: $DENYLIST_PROTO_DIR, else %(default)s)",
    )
    parser.add_argument(
        "--timeout", type=float, default=10.0, help="deadline of each unary call, seconds (default 10)"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    verify = commands.add_parser("verify", help="verify tokens (signature, claims, denylist)")
    verify.add_argument("tokens", nargs="+", metavar="TOKEN")
    verify.set_defaults(run=cmd_verify)

    check = commands.add_parser("check", help="is a token with these claims revoked?")
    check.add_argument("--issuer", required=True)
    check.add_argument("--subject")
    check.add_argument("--jti")
    check.add_argument("--session")
    check.add_argument("--kid")
    check.add_argument("--issued-at", type=int, help="the token's iat (Unix seconds)")
    check.set_defaults(run=cmd_check)

    watch = commands.add_parser("watch", help="wait for a revocation matching a token or subject")
    watch.add_argument("token", nargs="?", metavar="TOKEN")
    watch.add_argument("--issuer")
    watch.add_argument("--subject")
    watch.add_argument("--session")
    watch.add_argument("--issued-at", type=int, help="the watched token's iat (Unix seconds)")
    watch.set_defaults(run=cmd_watch)

    status = commands.add_parser("status", help="the sidecar's readiness and denylist state")
    status.set_defaults(run=cmd_status)
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        import grpc
    except ImportError:
        print(
            "denylist_client: grpcio is not installed: pip install -r requirements.txt",
            file=sys.stderr,
        )
        return EXIT_FAILED
    try:
        pb2, pb2_grpc = load_stubs(args.proto_dir)
        with open_channel(args) as channel:
            stub = pb2_grpc.VerifierStub(channel)
            try:
                return args.run(args, pb2, stub)
            except grpc.RpcError as error:
                return rpc_failed(args.command.capitalize(), error)
    except ImportError as error:
        print(
            f"denylist_client: {error}: pip install -r requirements.txt",
            file=sys.stderr,
        )
        return EXIT_FAILED
    except ClientError as error:
        print(f"denylist_client: {error}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
