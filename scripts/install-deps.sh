#!/usr/bin/env bash
# Installs what the build needs and a fresh machine lacks: libclang (RocksDB's bindings),
# chromium and its WebDriver (the browser tests), promtool (the metrics and alert rule tests)
# and cargo-nextest. Does nothing when they are present.
set -euo pipefail
need_apt=()
# bindgen needs libclang.so itself (libclang-cpp, which some images ship, is not enough).
dpkg -s libclang-dev >/dev/null 2>&1 || need_apt+=(libclang-dev)
command -v g++ >/dev/null 2>&1 || need_apt+=(g++)
command -v make >/dev/null 2>&1 || need_apt+=(make)
# The browser tests (tests/support/browser.rs) drive Debian's headless chromium through chromedriver.
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need_apt+=(chromium-driver)
# tests/ops_tooling.rs runs promtool (check metrics, check rules, test rules): Debian ships it in
# the prometheus package (its service is not started in a container without an init system).
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
if [ ${#need_apt[@]} -gt 0 ]; then
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need_apt[@]}"
fi
# make test holds formatting and lints (rustfmt.toml, clippy.toml).
for component in rustfmt clippy; do
  command -v "cargo-${component/rustfmt/fmt}" >/dev/null 2>&1 || rustup component add "$component"
done
if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install --locked cargo-nextest
fi
# The Python SDK (sdk/python, tests/sdk_python.rs): its generator (openapi-python-client, with
# ruff) and what the generated client imports, pinned in sdk/python/requirements.txt, in a virtual
# environment outside the clone like the build cache. Made again when the pins change.
sdk_venv=${CLEARING_SDK_VENV:-/var/tmp/clearing-sdk-venv}
sdk_requirements="$(dirname "$0")/../sdk/python/requirements.txt"
sdk_stamp=$(sha256sum "$sdk_requirements" | cut -d' ' -f1)
if [ "$(cat "$sdk_venv/.requirements-sha256" 2>/dev/null)" != "$sdk_stamp" ]; then
  command -v python3 >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3; }
  if ! python3 -m venv --clear "$sdk_venv" >/dev/null 2>&1; then
    # Debian's python3 keeps venv and ensurepip in python3-venv.
    sudo_cmd=""
    [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq python3-venv
    python3 -m venv --clear "$sdk_venv"
  fi
  "$sdk_venv/bin/pip" install --quiet --disable-pip-version-check -r "$sdk_requirements"
  echo "$sdk_stamp" > "$sdk_venv/.requirements-sha256"
fi
# The contract test (tests/contract.rs) checks the served OpenAPI document with the tools API
# clients use and fuzzes the server against it: openapi-spec-validator and Schemathesis (pinned in
# contract/requirements.txt, in their own virtual environment outside the clone), Redocly CLI and
# Spectral (npm, pinned to the versions the contract/ rulesets are written for).
contract_venv=${CLEARING_CONTRACT_VENV:-/var/tmp/clearing-contract-venv}
contract_requirements="$(dirname "$0")/../contract/requirements.txt"
contract_stamp=$(sha256sum "$contract_requirements" | cut -d' ' -f1)
if [ "$(cat "$contract_venv/.requirements-sha256" 2>/dev/null)" != "$contract_stamp" ]; then
  python3 -m venv --clear "$contract_venv"
  "$contract_venv/bin/pip" install --quiet --disable-pip-version-check -r "$contract_requirements"
  echo "$contract_stamp" > "$contract_venv/.requirements-sha256"
fi
if ! command -v npm >/dev/null 2>&1; then
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq nodejs npm
fi
redocly --version 2>/dev/null | grep -qx '2.77.0' || npm install --global --silent --no-fund --no-audit '@redocly/cli@2.77.0'
spectral --version 2>/dev/null | grep -qx '6.16.3' || npm install --global --silent --no-fund --no-audit '@stoplight/spectral-cli@6.16.3'
