#!/usr/bin/env bash
# Proves scripts/setup.sh works from every partial state, as a newcomer's
# machine would be: removes what it safely can (the Debian packages that
# only the lab uses, bpf-linker, the bpffs mount when nothing is pinned),
# runs setup.sh, and asserts it succeeded and everything is back. Then the
# same from partial states, from a complete one, and one failure that must
# be reported in one line. As root; takes a few minutes (bpf-linker is
# rebuilt twice). Leaves the machine set up. It PURGES Debian's crowdsec
# and crowdsec-firewall-bouncer (their /etc/crowdsec configuration with
# them): not on a machine whose CrowdSec is in use.
#   scripts/check-setup.sh             every state below
set -uo pipefail
cd "$(dirname "$0")/.."

BPF_LINKER_VERSION=$(sed -n 's/^BPF_LINKER_VERSION=//p' scripts/setup.sh)
REMOVABLE_DEBS=(sipvicious python3-pyinotify)
# Purged in their own state (their removal is not `apt-get remove`).
CROWDSEC_DEBS=(crowdsec crowdsec-firewall-bouncer)
failures=0

say() { printf '\033[1m--- %s\033[0m\n' "$*"; }
fail() { echo "check-setup: FAIL: $*" >&2; failures=$((failures + 1)); }

[ "$(id -u)" -eq 0 ] || { echo "check-setup: run as root" >&2; exit 1; }

remove_debs() { DEBIAN_FRONTEND=noninteractive apt-get remove -y -qq "$@" >/dev/null 2>&1; }
remove_bpf_linker() { cargo uninstall bpf-linker >/dev/null 2>&1 || true; }
unmount_bpffs() {
  # Only when nothing is pinned: pins belong to a running shield. (The
  # kernel's own maps.debug / progs.debug iterators are not pins.)
  if mountpoint -q /sys/fs/bpf && [ -z "$(ls -A /sys/fs/bpf 2>/dev/null | grep -v '\.debug$')" ]; then
    umount /sys/fs/bpf
  fi
}

# Everything setup.sh promises, checked from the outside.
assert_complete() {
  local state=$1
  for t in svmap svwar kamailio sipp nft promtool crowdsec cscli crowdsec-firewall-bouncer; do
    command -v "$t" >/dev/null || [ -x "/usr/sbin/$t" ] || fail "$state: $t missing after setup"
  done
  for p in "${REMOVABLE_DEBS[@]}" "${CROWDSEC_DEBS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
      || fail "$state: Debian package $p not installed after setup"
  done
  bpf-linker --version 2>/dev/null | grep -q "$BPF_LINKER_VERSION" \
    || fail "$state: bpf-linker $BPF_LINKER_VERSION missing after setup"
  mountpoint -q /sys/fs/bpf || fail "$state: /sys/fs/bpf not mounted after setup"
  rustup run "$(sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)" rustc --version >/dev/null \
    || fail "$state: pinned toolchain missing after setup"
  # The scanners run on Debian's python3, whatever python3 is first on PATH.
  # (Captured first: `grep -q` closing the pipe early would fail it.)
  local v
  v=$(svmap --version 2>&1) || fail "$state: svmap --version failed: $v"
  grep -q 'svmap v' <<<"$v" || fail "$state: svmap does not run: $v"
}

run_setup() {
  local state=$1
  say "$state: setup.sh"
  if ! bash scripts/setup.sh; then
    fail "$state: setup.sh exited non-zero"
    return
  fi
  assert_complete "$state"
}

say "state 1: nothing removable installed (${REMOVABLE_DEBS[*]}, bpf-linker, bpffs)"
remove_debs "${REMOVABLE_DEBS[@]}"
remove_bpf_linker
unmount_bpffs
run_setup "state 1 (nothing)"

say "state 2: only the Debian packages missing"
remove_debs "${REMOVABLE_DEBS[@]}"
run_setup "state 2 (no Debian Python packages)"

say "state 3: only bpf-linker missing, bpffs unmounted"
remove_bpf_linker
unmount_bpffs
run_setup "state 3 (no bpf-linker)"

say "state 4: everything installed"
run_setup "state 4 (complete)"

say "state 4b: crowdsec purged, its Central API credentials file left empty (as a failed offline install leaves it)"
DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq "${CROWDSEC_DEBS[@]}" >/dev/null 2>&1
mkdir -p /etc/crowdsec && : > /etc/crowdsec/online_api_credentials.yaml
run_setup "state 4b (crowdsec purged)"
[ -s /etc/crowdsec/online_api_credentials.yaml ] \
  || fail "state 4b: the Central API credentials file is still empty"

say "state 5: a step that cannot succeed (no rustup on PATH) is one line and exit 1"
err=$(env PATH=/usr/sbin:/usr/bin:/sbin:/bin bash scripts/setup.sh 2>&1 >/dev/null)
rc=$?
[ "$rc" -ne 0 ] || fail "state 5: setup.sh without rustup exited 0"
[ "$(printf '%s\n' "$err" | grep -c .)" -eq 1 ] || fail "state 5: expected one line on stderr, got: $err"
printf '%s' "$err" | grep -q "step 'rust toolchain' failed" || fail "state 5: the line does not name the step: $err"

say "state 6: a failing install step names itself (a package that does not exist)"
err=$(SETUP_EXTRA_APT=sipshield-no-such-package bash scripts/setup.sh 2>&1 >/dev/null)
rc=$?
[ "$rc" -ne 0 ] || fail "state 6: setup.sh with a missing package exited 0"
printf '%s' "$err" | grep -q "step 'apt" || fail "state 6: the line does not name the step: $err"
printf '%s' "$err" | grep -q "sipshield-no-such-package" || fail "state 6: the line does not say why: $err"

if [ "$failures" -eq 0 ]; then
  echo "check-setup: 6 passed, 0 failed"
else
  echo "check-setup: $failures check(s) failed" >&2
  exit 1
fi
