#!/bin/sh
# preempt-agent post-removal script, shared by the .deb (postrm) and the .rpm
# (%postun).
#   deb: $1 = remove | purge | upgrade <new-version> | disappear | failed-upgrade
#             | abort-install | abort-upgrade
#   rpm: $1 = number of instances left: 0 = erase, >= 1 = upgrade
set -e

UNIT=preempt-agent.service
STATEDIR=/var/lib/preempt-agent

systemd_reload() {
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        systemctl daemon-reload || true
        systemctl reset-failed "$UNIT" >/dev/null 2>&1 || true
    fi
}

case "$1" in
    remove | 0)
        systemd_reload
        if [ "$1" = remove ]; then
            # Kept until purge; tells a later reinstall (which dpkg runs as
            # "configure <old-version>") that it is a fresh install: enable and
            # start again.
            if [ ! -d "$STATEDIR" ]; then mkdir -m 0700 "$STATEDIR" || true; fi
            : >"$STATEDIR/.package-removed" 2>/dev/null || true
        fi
        ;;
    purge)
        # dpkg removes the conffiles; the rest of /etc/preempt-agent (hooks
        # the admin added, dpkg backups) and the state go too.
        rm -rf "$STATEDIR" /etc/preempt-agent
        systemd_reload
        ;;
    abort-install)
        systemd_reload
        ;;
    *)
        # upgrade, failed-upgrade, abort-upgrade, disappear, rpm upgrade:
        # the unit file may have changed; the new post-install reloaded already.
        ;;
esac

exit 0
