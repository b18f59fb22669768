#!/usr/bin/env bash
# Builds the Debian package from the release binary:
#   scripts/package.sh                          → target/debian/campusgw_<version>-1_<arch>.deb
#   scripts/package.sh --deb-version 0.1.0-2   (any further cargo-deb options)
# Installs cargo-deb when missing. Prints the path of the .deb on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo deb --version >/dev/null 2>&1; then
  echo "package.sh: installing cargo-deb" >&2
  cargo install --locked cargo-deb
fi
# The release build (a no-op when target/release is fresh), then the package
# around it: --no-build so cargo-deb packs exactly that binary.
# CAMPUSGW_PACKAGE_PREBUILT=1: the caller built it (tests/package.rs, after
# scripts/test.sh's release build; cargo run from a test's environment would
# see other variables and rebuild every dependency, for many minutes).
if [ "${CAMPUSGW_PACKAGE_PREBUILT:-}" != 1 ]; then
  cargo build --release --locked --bin campusgw >&2
fi
cargo deb --no-build --locked "$@"
