#!/usr/bin/env bash
# Installs everything SIP Shield needs to build and test on Debian 12, as
# root. Idempotent, and safe from any partial state: every step checks what
# is there and installs only what is missing.
#   1. the Rust toolchain pinned in rust-toolchain.toml (rust-src included)
#   2. bpf-linker (pinned: its LLVM must match rustc's, see README)
#   3. Debian packages for the real peers the tests talk to, SIPVicious
#      (Debian's `sipvicious`: svmap, svwar) among them. No pip: Debian's
#      packages run on Debian's /usr/bin/python3 whatever `python3` is first
#      on PATH, and nothing is installed into a system Python (PEP 668).
#      Also CrowdSec (Debian's `crowdsec` 1.4.6 and `crowdsec-firewall-bouncer`
#      0.0.25: the bouncer tests run a private Local API), installed offline:
#      no Central API registration, no service started.
#   4. cargo-deb (pinned), which `make deb` packages with; systemd-container
#      and debootstrap, with which the package test boots Debian 12 under a
#      real systemd (systemd-nspawn); man-db, whose man(1) renders the
#      generated man pages in their test
#   5. the BPF filesystem at /sys/fs/bpf
# A step that fails prints one line naming the step and why, and the script
# exits 1; the step's full output is kept in $SETUP_LOG_DIR.
set -uo pipefail
cd "$(dirname "$0")/.."

BPF_LINKER_VERSION=0.10.0
CARGO_DEB_VERSION=3.8.0
APT_PACKAGES=(
  build-essential pkg-config iproute2 nftables iptables kamailio sip-tester
  fail2ban prometheus bpftool tcpdump tshark hping3 jq procps rsync curl ethtool
  python3-pyinotify sipvicious crowdsec crowdsec-firewall-bouncer
  systemd-container debootstrap man-db
)
# Extra Debian packages, space-separated (scripts/check-setup.sh uses it to
# prove that a failing install names itself).
read -r -a extra_apt <<< "${SETUP_EXTRA_APT:-}"
APT_PACKAGES+=("${extra_apt[@]}")
SETUP_LOG_DIR=${SETUP_LOG_DIR:-/tmp/sipshield-setup}

log() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { echo "setup.sh: $*" >&2; exit 1; }

# step NAME CMD...: runs CMD with its output in a log; on failure, one line
# with the step, the exit status and the last line the command printed.
step() {
  local name=$1; shift
  local out rc=0 last
  out="$SETUP_LOG_DIR/$(printf '%s' "$name" | tr -c 'A-Za-z0-9.' '-' | cut -c1-40).log"
  log "$name"
  "$@" >"$out" 2>&1 || rc=$?
  if [ "$rc" -ne 0 ]; then
    last=$(grep -v '^[[:space:]]*$' "$out" | tail -n 1)
    die "step '$name' failed (exit $rc): ${last:-no output} (full log: $out)"
  fi
}

[ "$(id -u)" -eq 0 ] || die "run as root (it installs packages and mounts bpffs)"
mkdir -p "$SETUP_LOG_DIR" || die "cannot create the log directory $SETUP_LOG_DIR"
command -v rustup >/dev/null \
  || die "step 'rust toolchain' failed: rustup is not on PATH; install it (https://rustup.rs) and run again"
command -v apt-get >/dev/null \
  || die "step 'apt' failed: apt-get is not on PATH; this script supports Debian 12"

# RUSTUP_AUTO_INSTALL may be 0: install the pinned toolchain explicitly
# (with no argument rustup reads rust-toolchain.toml, components included).
toolchain=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)
[ -n "$toolchain" ] || die "step 'rust toolchain' failed: no channel in rust-toolchain.toml"
step "rust toolchain $toolchain" rustup toolchain install

install_bpf_linker() {
  cargo install "bpf-linker@$BPF_LINKER_VERSION" --locked --force
}
if bpf-linker --version 2>/dev/null | grep -q "$BPF_LINKER_VERSION"; then
  log "bpf-linker $BPF_LINKER_VERSION: present"
else
  step "bpf-linker $BPF_LINKER_VERSION" install_bpf_linker
  bpf-linker --version 2>/dev/null | grep -q "$BPF_LINKER_VERSION" \
    || die "step 'bpf-linker' failed: installed, but 'bpf-linker --version' does not say $BPF_LINKER_VERSION (is ~/.cargo/bin on PATH?)"
fi

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# crowdsec's postinst runs `cscli capi register` (network) unless the Central
# API credentials file exists and is not empty; an earlier failed install
# leaves it empty. A file holding only a comment keeps CrowdSec local-only
# and is left alone by later upgrades; real credentials are never touched.
CAPI_CREDENTIALS=/etc/crowdsec/online_api_credentials.yaml
crowdsec_offline() {
  mkdir -p /etc/crowdsec || return
  if [ ! -s "$CAPI_CREDENTIALS" ]; then
    echo '# no central API (scripts/setup.sh: offline install)' > "$CAPI_CREDENTIALS" || return
  fi
}
install_apt() {
  export DEBIAN_FRONTEND=noninteractive
  # Debian's kamailio/prometheus/fail2ban must not start services here.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  fi
  crowdsec_offline || return
  # A package whose configuration failed earlier blocks every install.
  dpkg --configure -a
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "$@"
}
if [ ${#missing[@]} -gt 0 ]; then
  step "apt: ${missing[*]}" install_apt "${missing[@]}"
else
  log "Debian packages: present"
fi
for tool in svmap svwar kamailio sipp nft promtool fail2ban-server crowdsec cscli crowdsec-firewall-bouncer ethtool unshare systemd-nspawn debootstrap man; do
  command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] \
    || die "step 'apt' failed: $tool is missing after the install"
done

# After apt: it builds C code (liblzma) with build-essential's cc.
install_cargo_deb() {
  cargo install "cargo-deb@$CARGO_DEB_VERSION" --locked --force
}
if cargo deb --version 2>/dev/null | grep -q "$CARGO_DEB_VERSION"; then
  log "cargo-deb $CARGO_DEB_VERSION: present"
else
  step "cargo-deb $CARGO_DEB_VERSION" install_cargo_deb
  cargo deb --version 2>/dev/null | grep -q "$CARGO_DEB_VERSION" \
    || die "step 'cargo-deb' failed: installed, but 'cargo deb --version' does not say $CARGO_DEB_VERSION"
fi

if mountpoint -q /sys/fs/bpf; then
  log "bpffs: mounted"
else
  step "mount bpffs on /sys/fs/bpf" mount -t bpf bpf /sys/fs/bpf
fi
log "setup done"
