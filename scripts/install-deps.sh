#!/usr/bin/env bash
# Installs what the build needs and a fresh machine lacks: libclang (RocksDB's bindings),
# chromium and its WebDriver (the browser tests) and cargo-nextest. Does nothing when they are present.
set -euo pipefail
need_apt=()
# bindgen needs libclang.so itself (libclang-cpp, which some images ship, is not enough).
dpkg -s libclang-dev >/dev/null 2>&1 || need_apt+=(libclang-dev)
command -v g++ >/dev/null 2>&1 || need_apt+=(g++)
command -v make >/dev/null 2>&1 || need_apt+=(make)
# The browser tests (tests/support/browser.rs) drive Debian's headless chromium through chromedriver.
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need_apt+=(chromium-driver)
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
# The contract test (tests/contract.rs) checks the served OpenAPI document with the tools API
# clients use, and fuzzes the server against it: openapi-spec-validator and Schemathesis (pip),
# Redocly CLI and Spectral (npm). Pinned to the majors the contract/ rulesets are written for.
pip_cmd=(python3 -m pip install --quiet)
if ! python3 -m pip --version >/dev/null 2>&1; then
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq python3-pip python3-venv
fi
# Debian's system python refuses pip installs outside a venv (PEP 668) unless told.
python3 -m pip install --help 2>/dev/null | grep -q -- --break-system-packages && pip_cmd+=(--break-system-packages)
command -v openapi-spec-validator >/dev/null 2>&1 || "${pip_cmd[@]}" 'openapi-spec-validator>=0.9,<0.10'
command -v schemathesis >/dev/null 2>&1 || "${pip_cmd[@]}" 'schemathesis>=4.32,<5'
if ! command -v npm >/dev/null 2>&1; then
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq nodejs npm
fi
command -v redocly >/dev/null 2>&1 || npm install --global --silent '@redocly/cli@2'
command -v spectral >/dev/null 2>&1 || npm install --global --silent '@stoplight/spectral-cli@6'
