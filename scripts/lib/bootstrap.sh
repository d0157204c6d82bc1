# Sourced by scripts/test and scripts/demo: installs what podq needs on a fresh machine
# (Debian's redis-server and openssl, a .venv with podq, the control-plane binaries) and
# is quick when everything is already there.

log() { printf '\033[1m==> %s\033[0m\n' "$*"; }

# debian_install COMMAND PACKAGE WHY: the Debian package, unless COMMAND is already there
debian_install() {
  command -v "$1" >/dev/null 2>&1 && return 0
  log "installing $2 (Debian package$3)"
  local sudo=
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$2" >/dev/null
  if [ "$2" = redis-server ]; then
    # the package starts a system service on 6379; podq runs its own servers
    $sudo systemctl disable --now redis-server >/dev/null 2>&1 || true
  fi
}

bootstrap() {
  local extras=$1
  debian_install redis-server redis-server ""
  # the certificates of the operator's webhook when it runs as a local process
  # (scripts/demo's processes mode, the webhook tests)
  debian_install openssl openssl ""
  case ",$extras," in
    # the dashboard's browser tests drive Debian's Chromium (tests/web)
    *,test,*) debian_install chromium chromium ", for the dashboard's browser tests" ;;
  esac
  if [ ! -x .venv/bin/python ]; then
    log "creating .venv"
    python3 -m venv .venv
  fi
  # constraints/test.txt: the exact versions the tests run with (scripts/lock-deps
  # refreshes it); it pins what gets installed, never adds a package
  log "installing podq[$extras] into .venv (versions from constraints/test.txt)"
  .venv/bin/pip install -q --disable-pip-version-check -c constraints/test.txt -e ".[$extras]"
  log "Kubernetes control plane binaries (built once from Go modules, then cached)"
  case ",$extras," in
    *,test,*) scripts/control-plane install ;;
    # promtool only checks the chart's alerts in the tests
    *) scripts/control-plane install --without promtool ;;
  esac
}
