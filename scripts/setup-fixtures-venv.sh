#!/usr/bin/env bash
# Create the Python virtual environment used to regenerate golden test
# fixtures (scripts/gen_fixtures.py). It lives in <repo>/.venv-fixtures
# (git-ignored) and installs the exact pinned packages listed in
# ../shared/fixtures/requirements-fixtures.txt. Safe to run repeatedly:
# an existing venv whose packages already match is left alone.
set -euo pipefail

repo_root="$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"
venv="${repo_root}/.venv-fixtures"
requirements="${repo_root}/../shared/fixtures/requirements-fixtures.txt"
stamp="${venv}/.requirements.sha256"

if [[ ! -f "${requirements}" ]]; then
    echo "error: requirements file not found: ${requirements}" >&2
    exit 1
fi

want="$(sha256sum "${requirements}" | cut -d' ' -f1)"
if [[ -x "${venv}/bin/python" && -f "${stamp}" && "$(cat "${stamp}")" == "${want}" ]]; then
    echo "fixtures venv is up to date: ${venv}"
    exit 0
fi

if [[ ! -x "${venv}/bin/python" ]]; then
    echo "creating ${venv}"
    python3 -m venv "${venv}"
fi

echo "installing pinned packages from ${requirements}"
if ! "${venv}/bin/python" -m pip install --quiet --disable-pip-version-check \
        --no-deps -r "${requirements}"; then
    echo "error: pip install failed (offline, or a pinned version is unavailable?)" >&2
    exit 1
fi

echo "${want}" > "${stamp}"
echo "fixtures venv ready: ${venv}/bin/python"
