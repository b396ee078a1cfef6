#!/usr/bin/env bash
# Installs everything SIP Shield needs to build and test on Debian 12, as
# root. Idempotent: it only installs what is missing.
#   - the Rust toolchain pinned in rust-toolchain.toml (with rust-src)
#   - bpf-linker (pinned: its LLVM must match rustc's, see README)
#   - Debian packages for the real peers the tests talk to
#   - PyPI packages (sipvicious scanners, scapy)
#   - the BPF filesystem at /sys/fs/bpf
set -euo pipefail
cd "$(dirname "$0")/.."

BPF_LINKER_VERSION=0.10.0
APT_PACKAGES=(
  build-essential pkg-config iproute2 nftables iptables kamailio sip-tester
  fail2ban prometheus bpftool tcpdump tshark hping3 jq procps rsync curl python3-pyinotify
)
PIP_PACKAGES=(sipvicious==0.3.8 scapy==2.8.0)

log() { printf '\033[1m==> %s\033[0m\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
  echo "setup.sh: run as root (it installs packages and mounts bpffs)" >&2
  exit 1
fi

# Rust: RUSTUP_AUTO_INSTALL may be 0, so install the pinned toolchain
# explicitly (rustup reads rust-toolchain.toml, components included).
if ! command -v rustup >/dev/null; then
  echo "setup.sh: rustup is required (https://rustup.rs)" >&2
  exit 1
fi
log "rust toolchain ($(sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml))"
rustup toolchain install

if ! bpf-linker --version 2>/dev/null | grep -q "$BPF_LINKER_VERSION"; then
  log "bpf-linker $BPF_LINKER_VERSION"
  cargo install "bpf-linker@$BPF_LINKER_VERSION" --locked --force
fi

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "apt: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Debian's kamailio/prometheus/fail2ban must not start services here.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

pip_missing=()
for p in "${PIP_PACKAGES[@]}"; do
  name=${p%%==*}; want=${p##*==}
  have=$(python3 -m pip show "$name" 2>/dev/null | sed -n 's/^Version: //p')
  [ "$have" = "$want" ] || pip_missing+=("$p")
done
if [ ${#pip_missing[@]} -gt 0 ]; then
  log "pip: ${pip_missing[*]}"
  python3 -m pip install -q --root-user-action=ignore --break-system-packages "${pip_missing[@]}" 2>/dev/null \
    || python3 -m pip install -q --root-user-action=ignore "${pip_missing[@]}"
fi

if ! mountpoint -q /sys/fs/bpf; then
  log "mount bpffs on /sys/fs/bpf"
  mount -t bpf bpf /sys/fs/bpf
fi
log "setup done"
