#!/bin/sh
# preempt-agent post-install script, shared by the .deb (postinst) and the
# .rpm (%post). nfpm runs no debhelper or rpm macros, so the systemd work is
# done here.
#   deb: $1 = configure [last-configured-version] | abort-upgrade | abort-remove | abort-deconfigure
#   rpm: $1 = number of installed instances after this one: 1 = install, >= 2 = upgrade
set -e

UNIT=preempt-agent.service
LIBDIR=/usr/lib/preempt-agent
STATEDIR=/var/lib/preempt-agent
# Left by postremove after `apt remove` (without purge): dpkg then calls a later
# install "configure <old-version>", which is a fresh install for systemd.
REMOVED_MARK="$STATEDIR/.package-removed"

systemd_running() { [ -d /run/systemd/system ]; }

compile_python() {
    # Byte-compile once, as root, so the daemon starts fast; the launcher never
    # writes bytecode itself, so nothing outside the package list appears later.
    find "$LIBDIR" -depth -type d -name __pycache__ -exec rm -rf {} + 2>/dev/null || true
    if command -v python3 >/dev/null 2>&1; then
        python3 -m compileall -q "$LIBDIR" >/dev/null 2>&1 || true
    fi
}

case "$1" in
    configure)
        if [ -z "$2" ] || [ -e "$REMOVED_MARK" ]; then mode=install; else mode=upgrade; fi
        ;;
    abort-upgrade | abort-remove | abort-deconfigure)
        mode=abort
        ;;
    *)
        if [ "$1" -ge 2 ] 2>/dev/null; then mode=upgrade; else mode=install; fi
        ;;
esac

rm -f "$REMOVED_MARK"

if [ "$mode" != abort ]; then
    compile_python
fi

if ! command -v systemctl >/dev/null 2>&1; then
    exit 0
fi

if systemd_running; then
    systemctl daemon-reload || true
fi

case "$mode" in
    install)
        # `enable` also works without a running systemd (image builds, chroots):
        # it only creates the symlinks.
        systemctl enable "$UNIT" >/dev/null 2>&1 || true
        if systemd_running; then
            # The agent exits by design (e.g. 5 on a machine that is no cloud
            # instance); that must not fail the package installation.
            systemctl start "$UNIT" || true
        fi
        ;;
    upgrade | abort)
        # Never enable on upgrade (the admin may have disabled it); restart
        # only a running agent, so a finished (drained) one stays finished.
        if systemd_running; then
            systemctl try-restart "$UNIT" || true
        fi
        ;;
esac

exit 0
