# Sourced by every script: find the project root, make sure .venv holds an up-to-date install
# of the project, and put its bin/ first on PATH. Re-installs when pyproject.toml changed.
set -euo pipefail

AGENTDB_ROOT="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)"
export AGENTDB_ROOT
venv="$AGENTDB_ROOT/.venv"
extras="${AGENTDB_EXTRAS:-dev}"
stamp="$venv/.agentdb-installed-$extras.sha256"

find_python() {
    local candidate
    for candidate in python3.13 python3.12 python3.11 python3; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    echo "agentdb: Python 3.11 or newer is required (none found on PATH)" >&2
    return 1
}

wanted="$(sha256sum "$AGENTDB_ROOT/pyproject.toml" | cut -d' ' -f1)"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
    python="$(find_python)"
    echo "agentdb: installing the project into .venv (first run, or pyproject.toml changed)" >&2
    [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        -e "$AGENTDB_ROOT[$extras]" >&2
    echo "$wanted" >"$stamp"
fi

export PATH="$venv/bin:$PATH"
