#!/usr/bin/env bash
# Installs the Debian packages Membit's demo and test suite need on a fresh machine, and
# nothing when they are already there. Both README commands call it, so a newcomer's
# machine ends up with what CI's has.
#   bash scripts/setup-system.sh          # what the demo needs: a compiler for the addon, chromium
#   bash scripts/setup-system.sh --tests  # also sshd/ssh (remote-run tests) and SLURM + munge
#                                         # (a one-node cluster on localhost for the SLURM tests)
# Fails, naming the packages, when they are missing and cannot be installed.
set -euo pipefail

TESTS=0; [ "${1:-}" = "--tests" ] && TESTS=1

# command-or-file → Debian package
want=(
  "chromium:chromium"            # drives code-server's web UI (demo --check, e2e)
  "pkg-config:pkg-config"        # code-server's native modules
  "g++:build-essential"          # the NVML addon and code-server's native modules
  "/usr/include/gssapi/gssapi.h:libkrb5-dev"  # code-server's kerberos addon
)
if [ "$TESTS" -eq 1 ]; then
  want+=(
    "/usr/sbin/sshd:openssh-server"   # the real sshd the remote-run tests start on 127.0.0.1
    "ssh:openssh-client"
    "slurmctld:slurmctld"             # a real one-node SLURM cluster for the SLURM target tests
    "slurmd:slurmd"
    "sbatch:slurm-client"
    "munged:munge"
  )
fi

missing=()
for pair in "${want[@]}"; do
  probe="${pair%%:*}"; pkg="${pair#*:}"
  if [[ "$probe" == /* ]]; then [ -e "$probe" ] && continue
  else command -v "$probe" >/dev/null 2>&1 && continue
       [ -x "/usr/sbin/$probe" ] && continue
  fi
  missing+=("$pkg")
done
[ "${#missing[@]}" -eq 0 ] && { echo "setup-system: all Debian packages present"; exit 0; }

echo "setup-system: installing ${missing[*]}"
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
if ! command -v apt-get >/dev/null 2>&1; then
  echo "setup-system: missing ${missing[*]} and no apt-get here: install them with your package manager" >&2
  exit 1
fi
$SUDO apt-get update -qq || { echo "setup-system: apt-get update failed; install ${missing[*]} by hand" >&2; exit 1; }
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
  || { echo "setup-system: could not install ${missing[*]}" >&2; exit 1; }
echo "setup-system: done"
