# Shared by the scripts in this folder: paths, tool versions, and a logger.
# Sourced, not run.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.tools"

TRUNK_VERSION="0.21.14"
# The dashboard's wasm is built by a nightly toolchain so that it can rebuild the standard
# library for size (scripts/build-ui). Host code, clippy and tests use stable.
UI_TOOLCHAIN="nightly"
BINARYEN_VERSION="132.0.0"
TERSER_VERSION="5.51.4"

# Project tools first: in particular binaryen's wasm-opt from npm must win over Debian's
# binaryen 108, which produces broken wasm (notes/toolchain.md).
export PATH="$TOOLS/node_modules/.bin:$HOME/.cargo/bin:$PATH"
# Trunk must never download a tool; the Trunk.toml setting alone does not stop its
# update check.
export TRUNK_OFFLINE=true

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# The wasm-bindgen version Cargo.lock pins; the CLI must match it exactly.
wasm_bindgen_version() {
  awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' "$ROOT/Cargo.lock"
}
