#!/usr/bin/env bash
# `make lint`'s shell part: shellcheck on every shell script of the repository, found by name
# (*.sh) and by shebang (sh, bash, dash: .ci/run has no extension), so that a new script is
# checked without being listed anywhere. Build outputs, local databases and virtualenvs are
# skipped. Files sourced with a literal path (`. scripts/lib/...`) are followed (-x): the scripts
# source them relative to the repository root, where this runs.
#   scripts/lint-scripts.sh          shellcheck them all (exit status 1 on any finding)
#   scripts/lint-scripts.sh --list   print the list only
set -euo pipefail
cd "$(dirname "$0")/.."

# `#!/bin/sh`, `#!/bin/bash -e`, `#!/usr/bin/env bash`; not Rust's `#![...]`.
shebang='^#![[:space:]]*(/[^[:space:]]*/)?(env[[:space:]]+)?(ba|da)?sh([[:space:]]|$)'
scripts=()
while IFS= read -r -d '' f; do
  f=${f#./}
  if [[ $f == *.sh ]]; then
    scripts+=("$f")
  else
    first=""
    IFS= read -r first <"$f" || true # a file without a newline still has a first line
    if [[ $first =~ $shebang ]]; then scripts+=("$f"); fi
  fi
done < <(find . \( -type d \( -name .git -o -name target -o -name .pgdata -o -name .venv \
  -o -name node_modules -o -name __pycache__ -o -name bench-results -o -name .schemathesis \) \
  -prune \) -o -type f -print0 | sort -z)

if [ "${1:-}" = --list ]; then
  printf '%s\n' "${scripts[@]}"
  exit 0
fi
if ! command -v shellcheck >/dev/null; then
  echo "lint: shellcheck is missing (Debian/Ubuntu: apt-get install shellcheck)" >&2
  exit 1
fi
echo "shellcheck: ${#scripts[@]} scripts"
shellcheck -x "${scripts[@]}"
