#!/usr/bin/env bash
# Install everything radflow needs on a fresh Debian machine, idempotently.
#
#   scripts/setup.sh            # system packages (when missing) + .venv + radflow and its plugins
#
# Re-running it is fast: system packages are only installed when missing, and the virtual
# environment is only rebuilt when constraints.txt or a pyproject.toml changed (a stamp file
# holds their hash).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
venv=${RADFLOW_VENV:-$here/.venv}
python=${PYTHON:-python3.11}

say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

# --- 1. system packages: Orthanc, its DICOMweb plugin, DCMTK ----------------------------------
missing=()
[ -x /usr/sbin/Orthanc ] || missing+=(orthanc)
[ -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || missing+=(orthanc-dicomweb)
[ -x /usr/bin/storescu ] || missing+=(dcmtk)
# the browser tests drive Debian's chromium (headless, through Playwright)
[ -x /usr/bin/chromium ] || missing+=(chromium)
# PostgreSQL: the tests' throwaway cluster, and Orthanc's index on it (site up --orthanc-index-url)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
[ -e /usr/share/orthanc/plugins/libOrthancPostgreSQLIndex.so ] || missing+=(orthanc-postgresql)
if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    say "installing Debian packages: ${missing[*]}"
    $sudo apt-get update -q >/dev/null
    # policy-rc.d-free containers would start Debian's own Orthanc service on 8042/4242;
    # radflow never uses it, so keep it from starting.
    DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 $sudo apt-get install -y -q --no-install-recommends \
        "${missing[@]}" >/dev/null
    if command -v service >/dev/null && service orthanc status >/dev/null 2>&1; then
        $sudo service orthanc stop >/dev/null 2>&1 || true
    fi
    # nor Debian's own PostgreSQL cluster: radflow's tests make their own
    if command -v service >/dev/null && service postgresql status >/dev/null 2>&1; then
        $sudo service postgresql stop >/dev/null 2>&1 || true
    fi
else
    say "Debian packages present (orthanc, orthanc-dicomweb, orthanc-postgresql, dcmtk, chromium, postgresql)"
fi

# --- 2. the virtual environment ---------------------------------------------------------------
stamp_inputs=(constraints.txt pyproject.toml scripts/setup.sh)
while IFS= read -r f; do stamp_inputs+=("$f"); done < <(ls plugins/*/pyproject.toml 2>/dev/null || true)
want=$( (cat "${stamp_inputs[@]}"; "$python" --version) | sha256sum | cut -d' ' -f1)
if [ -f "$venv/.radflow-stamp" ] && [ "$(cat "$venv/.radflow-stamp")" = "$want" ] \
        && "$venv/bin/python" -c "import radflow" 2>/dev/null; then
    say "virtual environment up to date: $venv"
    exit 0
fi

say "building virtual environment in $venv"
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
quiet() { grep -v -E "is ignored: it is neither a file nor a directory" || true; }

"${pip[@]}" install -q -U pip setuptools wheel 2>&1 | quiet
# numpy first: pyradiomics 3.0.1 builds against it without build isolation.
"${pip[@]}" install -q -c constraints.txt numpy 2>&1 | quiet
"${pip[@]}" show pyradiomics >/dev/null 2>&1 || \
    "${pip[@]}" install -q -c constraints.txt --no-build-isolation pyradiomics==3.0.1 2>&1 | quiet

editables=(-e ".[test]")
for p in plugins/*/; do
    [ -f "$p/pyproject.toml" ] && editables+=(-e "$p")
done
"${pip[@]}" install -q -c constraints.txt --no-build-isolation "${editables[@]}" 2>&1 | quiet
# unittest2 (required by batchgenerators, for nnU-Net) pulls in PyPI's argparse 1.4, a copy of
# the standard library's from 2015. Wherever site-packages comes first on the path (PYTHONPATH),
# it shadows Python's own and breaks pydantic-settings, and with it Prefect: remove it.
"${pip[@]}" uninstall -q -y argparse 2>&1 | quiet || true
"$venv/bin/python" -c "import radflow, prefect, highdicom, SimpleITK" >/dev/null
echo "$want" > "$venv/.radflow-stamp"
say "done: $("$venv/bin/radflow" --version)"
