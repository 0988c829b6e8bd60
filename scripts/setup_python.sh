#!/usr/bin/env bash
# The project's Python environment: a venv on Debian's Python that sees DaCHS
# (and Debian's numpy/astropy, which DaCHS needs), with the project installed.
# Idempotent: pip runs only when requirements or the project changed.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
VENV="${RETRSPECT_VENV:-/opt/retrspect/venv}"
log() { printf '[setup] %s\n' "$*"; }

if [ ! -x "$VENV/bin/python" ]; then
  log "creating venv $VENV"
  mkdir -p "$(dirname "$VENV")"
  /usr/bin/python3 -m venv --system-site-packages "$VENV"
fi
chmod 755 "$(dirname "$VENV")"
pip=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
# Keep Debian's numpy and astropy: DaCHS is built against them.
constraints="$VENV/constraints.txt"
/usr/bin/python3 - > "$constraints" <<'PY'
import numpy, astropy
print(f"numpy=={numpy.__version__}\nastropy=={astropy.__version__}")
PY
stamp="$VENV/.retrspect-deps"
want=$(cat "$here/scripts/requirements.txt" "$constraints" | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "installing Python dependencies into $VENV"
  # torch: the CPU wheel on this machine's disk (an unpinned torch pulls CUDA).
  "${pip[@]}" install -c "$constraints" -r "$here/scripts/requirements.txt"
  # data packages: heavy pinned dependencies we do not need; their data only.
  "${pip[@]}" install --no-deps sdss-mangadap==4.5.0 linetools==0.3.2
  echo "$want" > "$stamp"
fi
# The project itself (not editable: the DaCHS server, running as gavo, imports it).
# setuptools' build/ keeps files deleted from the tree (an old model would
# be installed beside its successor): build from scratch every time.
rm -rf "$here/build" "$here"/*.egg-info
log "installing retrspect into $VENV"
"${pip[@]}" install --no-deps --no-build-isolation --force-reinstall "$here"

# DaCHS's CLI on the venv's Python: `dachs` for us, `gavo` for the async TAP
# workers the server starts from PATH (gavo taprun), which hands its job to
# the warm worker server when it runs (vo_services/taprun_server.py).
cli_module() { [ "$1" = gavo ] && echo retrspect.vo_services.taprun_server || echo gavo.user.cli; }
for name in dachs gavo; do
  cat > "$VENV/bin/$name" <<PY
#!$VENV/bin/python
import sys
from $(cli_module $name) import main
if __name__ == "__main__":  # spawned worker processes import this file
    sys.exit(main())
PY
  chmod 755 "$VENV/bin/$name"
done
# Load retrspect's DaCHS extensions into every process of this venv.
site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo 'import retrspect.vo_services.dachs_hook as h; h.install()' > "$site/retrspect_dachs_hook.pth"
