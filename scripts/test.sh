#!/usr/bin/env bash
# The one test command: installs what the tests need when it is missing, then
# runs formatting, lints and every test (unit and integration, against real
# mosquitto, InfluxDB 1.x, VictoriaMetrics, pymodbus and socat started by the
# tests themselves, the fault suite included), then each fuzz target for
# FUZZ_SECONDS (default 30; 0 skips fuzzing).
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# Debian packages: command → package.
declare -A want=(
  [mosquitto]=mosquitto
  [mosquitto_passwd]=mosquitto
  [mosquitto_pub]=mosquitto-clients
  [influxd]=influxdb
  [victoria-metrics]=victoria-metrics
  [socat]=socat
  [chromium]=chromium
  [chromedriver]=chromium-driver
  [python3]=python3
  [nft]=nftables
  # The Debian package and container tests (tests/package.rs, tests/containers.rs).
  [lintian]=lintian
  [docker-compose]=docker-compose
  [systemd-analyze]=systemd
  [adduser]=adduser
)
missing=()
for cmd in "${!want[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${want[$cmd]}")
done
if [ ${#missing[@]} -gt 0 ]; then
  pkgs=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')
  echo "test.sh: installing $pkgs"
  as_root apt-get update -qq
  # Their post-install scripts try to start services; that is refused in a container and harmless.
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $pkgs
fi

# pymodbus from PyPI, pinned (its server API changes between minor releases),
# in the venv the Modbus tests look for (tests/common/modbus.rs); aiosmtpd,
# pinned, is the email tests' SMTP server (tests/common/smtp.rs).
PYMODBUS=3.16.1
AIOSMTPD=1.4.6
venv=target/pyvenv
if ! "$venv/bin/python" -c "import sys, serial, pymodbus, aiosmtpd; sys.exit(pymodbus.__version__ != '$PYMODBUS' or aiosmtpd.__version__ != '$AIOSMTPD')" >/dev/null 2>&1; then
  echo "test.sh: creating $venv with pymodbus==$PYMODBUS"
  rm -rf "$venv"
  mkdir -p target
  if ! python3 -m venv "$venv" >/dev/null 2>&1; then
    # Debian's python3 makes venvs only with python3-venv.
    rm -rf "$venv"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv
    python3 -m venv "$venv"
  fi
  "$venv/bin/pip" install -q --disable-pip-version-check "pymodbus==$PYMODBUS" "pyserial==3.5" "aiosmtpd==$AIOSMTPD"
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "test.sh: installing cargo-nextest"
  cargo install --locked cargo-nextest
fi
if ! cargo deb --version >/dev/null 2>&1; then
  echo "test.sh: installing cargo-deb"
  cargo install --locked cargo-deb
fi

echo "test.sh: cargo fmt --check"
cargo fmt --all -- --check
echo "test.sh: cargo clippy"
cargo clippy --all-targets --locked -- -D warnings
echo "test.sh: cargo build --release (the binary tests/package.rs packs)"
cargo build --release --locked --bin campusgw
echo "test.sh: cargo nextest run"
cargo nextest run --locked --profile "${NEXTEST_PROFILE:-ci}" "$@"

fuzz_seconds="${FUZZ_SECONDS:-30}"
if [ "$fuzz_seconds" != 0 ]; then
  if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "test.sh: installing cargo-fuzz"
    cargo install --locked cargo-fuzz
  fi
  # cargo-fuzz needs nightly flags (-Zsanitizer); the machine has the stable
  # toolchain only, which accepts them with RUSTC_BOOTSTRAP=1.
  for target in decode topic config; do
    echo "test.sh: fuzzing $target for ${fuzz_seconds}s"
    # New inputs go to a scratch dir; the committed corpus (fuzz/corpus) is
    # only read. A crash leaves its input in fuzz/artifacts/ and fails the run.
    scratch=$(mktemp -d)
    # --dev -s none: an unoptimised build without AddressSanitizer takes about
    # 4 minutes here instead of 10+ for the instrumented release build, which
    # matters for CI's time; the code is safe Rust, so ASan adds little. For a
    # long local run use the default (release + ASan), see README "Fuzzing".
    RUSTC_BOOTSTRAP=1 cargo fuzz run --dev -s none "$target" "$scratch" "fuzz/corpus/$target" -- \
      -max_total_time="$fuzz_seconds" -rss_limit_mb=2048
    rm -rf "$scratch"
  done
  echo "test.sh: fuzzing done"
fi
