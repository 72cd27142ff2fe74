#!/usr/bin/env bash
# Generates everything derived from protos/ into the folder given (default: the
# checkout): the Python messages (clients/python/src/htk) and gRPC stubs
# (gen/), with their type stubs,
# envoy/process_service.binpb (the descriptor set Envoy's transcoder reads),
# the TypeScript and Go clients' code (buf.gen.yaml), and
# server/domain/declared.py (the protos' words and limits for the domain).
# `make check-generated` runs it into a scratch folder and diffs the result.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-.}"
python=".venv/bin/python"
# Every proto of the API, found rather than listed: a new file needs no edit here.
mapfile -t protos < <(cd protos && find htk -name '*.proto' | sort)

rm -rf "$out/gen" "$out/clients/python/src/htk"
mkdir -p "$out/gen" "$out/envoy" "$out/clients/python/src"
# The messages go to the Python client's package, which pip installs from
# clients/python alone (it speaks REST, so it needs no gRPC); the server, which
# installs that package beside itself, finds the gRPC stubs in gen/. One copy
# of each module, in the one namespace package `htk.processes.v1`.
# Only our own files are generated: google/... would shadow the installed
# googleapis-common-protos package.
"$python" -m grpc_tools.protoc -I protos -I third_party/protos \
  --plugin=protoc-gen-mypy=.venv/bin/protoc-gen-mypy \
  --plugin=protoc-gen-mypy_grpc=.venv/bin/protoc-gen-mypy_grpc \
  --python_out="$out/clients/python/src" --mypy_out="$out/clients/python/src" \
  --grpc_python_out="$out/gen" --mypy_grpc_out="$out/gen" \
  "${protos[@]}"
# error_details.proto is in the descriptor so that Envoy can print the
# google.rpc.BadRequest details of an error; without it the body is empty.
"$python" -m grpc_tools.protoc -I protos -I third_party/protos \
  --include_imports --include_source_info \
  --descriptor_set_out="$out/envoy/process_service.binpb" \
  "${protos[@]}" google/rpc/error_details.proto
# The OpenAPI document of the REST API, from the same descriptor set Envoy reads.
"$python" scripts/openapi.py "$out/envoy/process_service.binpb" "$out/docs/openapi.json"
# The words and limits the protos declare, as plain Python for the domain.
"$python" scripts/declared.py "$out/envoy/process_service.binpb" "$out/server/domain/declared.py"
# The TypeScript and Go clients' code, by buf with the local plugins that
# buf.gen.yaml names (`make setup` installs them).
rm -rf "$out/clients/typescript/src/gen" "$out/clients/go/gen"
node_modules/.bin/buf generate -o "$out"
