# Sourced by scripts/test and scripts/run: installs what healthd, its tests and
# the lab need on a fresh Debian/Ubuntu machine, and leaves a ready .venv.
# shellcheck shell=bash
log() { printf '\n== %s\n' "$*"; }

apt_install() {
    local missing=()
    for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    log "apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Do not let package scripts start daemons on their default ports: tests
    # start private instances themselves.
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
    rm -f /usr/sbin/policy-rc.d
}

# System packages and shared servers need root. Without root (e.g. the fast tests:
# scripts/test -m "not e2e and not backend") they are left as they are.
if [ "$(id -u)" -eq 0 ]; then
    # System packages: servers the tests run privately, and the tools they call.
    apt_install memcached haproxy mariadb-server mariadb-client rabbitmq-server prometheus prometheus-alertmanager \
        chromium chromium-driver

    # MariaDB and RabbitMQ are shared with other users of this machine: start them
    # only if they are not running, never reconfigure them.
    if ! mysqladmin -h127.0.0.1 -uroot ping >/dev/null 2>&1; then
        log "starting MariaDB"
        start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
        for _ in $(seq 60); do mysqladmin -h127.0.0.1 -uroot ping >/dev/null 2>&1 && break; sleep 1; done
    fi
    if ! rabbitmqctl -q status >/dev/null 2>&1; then
        log "starting RabbitMQ"
        rabbitmq-server -detached
        rabbitmqctl -q wait --timeout 120 /var/lib/rabbitmq/mnesia/rabbit@"$(hostname -s)".pid >/dev/null 2>&1 \
            || for _ in $(seq 60); do rabbitmqctl -q status >/dev/null 2>&1 && break; sleep 2; done
    fi

else
    log "not root: system packages and servers are not checked (fine for the unit tests)"
fi

if [ ! -x .venv/bin/python ]; then
    log "creating .venv"
    python3 -m venv .venv
fi
log "installing healthd and its test extras into .venv"
.venv/bin/pip install -q --upgrade pip >/dev/null
.venv/bin/pip install -q -e '.[test]'

