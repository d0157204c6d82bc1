# Sourced by scripts/test and scripts/demo: installs what podq needs on a fresh machine
# (Debian's redis-server and openssl, a .venv with podq, the control-plane binaries) and
# is quick when everything is already there.

log() { printf '\033[1m==> %s\033[0m\n' "$*"; }

bootstrap() {
  local extras=$1
  if ! command -v redis-server >/dev/null 2>&1; then
    log "installing redis-server (Debian package)"
    local sudo=
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server >/dev/null
    # the package starts a system service on 6379; podq runs its own servers
    $sudo systemctl disable --now redis-server >/dev/null 2>&1 || true
  fi
  # openssl makes the certificates of the operator's webhook when it runs as a local
  # process (scripts/demo's processes mode, the webhook tests)
  if ! command -v openssl >/dev/null 2>&1; then
    log "installing openssl (Debian package)"
    local sudo=
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq openssl >/dev/null
  fi
  case ",$extras," in
    *,test,*)
      # the dashboard's browser tests drive Debian's Chromium (tests/web)
      if ! command -v chromium >/dev/null 2>&1; then
        log "installing chromium (Debian package, for the dashboard's browser tests)"
        local sudo=
        [ "$(id -u)" -eq 0 ] || sudo=sudo
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
      fi
      ;;
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
