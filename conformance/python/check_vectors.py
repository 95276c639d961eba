"""Checks conformance/vectors/ with Google's protobuf runtime and protoc, independently of Rust.

For every frame vector: canonical JSON -> bytes equals the hex, bytes -> message -> bytes equals
the hex, and bytes -> JSON equals the fields. For every malformed vector: the receiver rules of
docs/PROTOCOL.md produce the expected error code. Prints one line per failure and ends with
"N passed, N failed".
"""

import json
import pathlib
import sys
import tempfile

from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.message import DecodeError
from grpc_tools import protoc

ROOT = pathlib.Path(__file__).resolve().parents[2]
PROTO_ROOT = ROOT / "im-proto" / "proto"
VECTORS = ROOT / "conformance" / "vectors"
SUPPORTED_VERSIONS = {1}


def load_pool():
    """Compiles the .proto files with protoc (not protox) and loads them into a pool."""
    files = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    with tempfile.TemporaryDirectory() as tmp:
        out = pathlib.Path(tmp) / "set.binpb"
        args = ["protoc", f"-I{PROTO_ROOT}", f"--descriptor_set_out={out}", "--include_imports", *files]
        if protoc.main(args) != 0:
            sys.exit("protoc rejected the .proto files")
        fds = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for file in fds.file:
        pool.Add(file)
    return pool


def to_json(message):
    return json_format.MessageToDict(message)


def receive(cls, hex_bytes, max_frame_bytes):
    """The error name a receiver reports for these bytes and the request id its answer
    carries, or None."""
    data = bytes.fromhex(hex_bytes)
    if len(data) > max_frame_bytes:
        return "FRAME_TOO_LARGE", 0
    message = cls()
    try:
        message.ParseFromString(data)
    except DecodeError:
        return "MALFORMED_FRAME", 0
    if message.WhichOneof("body") is None:
        message.DiscardUnknownFields()
        if len(message.SerializeToString()) < len(data):
            return "UNSUPPORTED_FRAME", message.request_id
        return "MALFORMED_FRAME", 0
    if message.WhichOneof("body") == "hello" and not SUPPORTED_VERSIONS & set(message.hello.protocol_versions):
        return "UNSUPPORTED_VERSION", message.request_id
    return None


def main():
    pool = load_pool()
    classes = {}

    def cls(name):
        if name not in classes:
            classes[name] = message_factory.GetMessageClass(pool.FindMessageTypeByName(name))
        return classes[name]

    passed, failures = 0, []

    def check(ok, what):
        nonlocal passed
        if ok:
            passed += 1
        else:
            failures.append(what)

    for path in sorted((VECTORS / "client").glob("*.json")) + sorted((VECTORS / "server").glob("*.json")):
        vector = json.loads(path.read_text())
        frame = cls(vector["message"])
        body = frame.DESCRIPTOR.oneofs_by_name["body"]
        check(vector["variant"] in [f.name for f in body.fields], f"{path.name}: unknown variant {vector['variant']}")
        for case in vector["cases"]:
            where = f"{path.relative_to(VECTORS)} / {case['name']}"
            parsed = json_format.ParseDict(case["fields"], frame())
            check(parsed.SerializeToString().hex() == case["hex"], f"{where}: JSON -> bytes")
            decoded = frame.FromString(bytes.fromhex(case["hex"]))
            check(decoded.SerializeToString().hex() == case["hex"], f"{where}: bytes -> message -> bytes")
            check(to_json(decoded) == case["fields"], f"{where}: bytes -> JSON")
            check(decoded.WhichOneof("body") == vector["variant"], f"{where}: body variant")

    for case in json.loads((VECTORS / "malformed.json").read_text())["cases"]:
        got = receive(cls(case["message"]), case["hex"], case["max_frame_bytes"])
        want = (case["error"]["name"], case["error"]["request_id"])
        check(got == want, f"malformed / {case['name']}: got {got}, want {want}")

    codes = json.loads((VECTORS / "error_codes.json").read_text())["codes"]
    enum = pool.FindEnumTypeByName("im.v1.ErrorCode")
    for row in codes:
        value = enum.values_by_number.get(row["code"])
        check(value is not None and value.name == "ERROR_CODE_" + row["name"], f"error code {row['code']} {row['name']}")

    for failure in failures:
        print("FAIL", failure)
    print(f"{passed} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
