#!/usr/bin/env bash
# Generates the Python client from a server's OpenAPI document.
#
#   sdk/python/generate.sh SOURCE OUT_DIR
#
# SOURCE is a running server's base URL (http://127.0.0.1:8080), its /openapi.json URL, or a saved
# document. Writes OUT_DIR/clearing_api (the generated package, replaced if there) and
# OUT_DIR/openapi.json (the document it was generated from). Put OUT_DIR and sdk/python on
# PYTHONPATH to use it with clearing_sdk (README.md). Needs the virtual environment that
# scripts/install-deps.sh makes (CLEARING_SDK_VENV, default /var/tmp/clearing-sdk-venv); nothing
# here goes to the network but the document's URL.
set -euo pipefail
if [ $# -ne 2 ]; then
  echo "usage: $0 SERVER_URL|DOCUMENT_URL|DOCUMENT_FILE OUT_DIR" >&2
  exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
venv=${CLEARING_SDK_VENV:-/var/tmp/clearing-sdk-venv}
if [ ! -x "$venv/bin/openapi-python-client" ]; then
  echo "no openapi-python-client in $venv: run scripts/install-deps.sh" >&2
  exit 1
fi
source=$1
out=$2
mkdir -p "$out"
"$venv/bin/python" - "$source" "$out/openapi.json" <<'PY'
import json, sys, urllib.request
source, target = sys.argv[1], sys.argv[2]
try:
    if source.startswith(("http://", "https://")):
        url = source if source.endswith(".json") else source.rstrip("/") + "/openapi.json"
        with urllib.request.urlopen(url, timeout=30) as response:
            text = response.read().decode("utf-8")
    else:
        with open(source, encoding="utf-8") as file:
            text = file.read()
    document = json.loads(text)
except (OSError, ValueError) as error:
    sys.exit(f"cannot read an OpenAPI document from {source}: {error}")
if not isinstance(document, dict) or "paths" not in document:
    sys.exit(f"{source} is not an OpenAPI document (no paths)")
with open(target, "w", encoding="utf-8") as file:
    json.dump(document, file, indent=1, ensure_ascii=False)
PY
# ruff (the post hooks of config.yaml) is in the same environment.
PATH="$venv/bin:$PATH" "$venv/bin/openapi-python-client" generate \
  --path "$out/openapi.json" --meta none --config "$here/config.yaml" \
  --output-path "$out/clearing_api" --overwrite
test -f "$out/clearing_api/client.py"
