#!/bin/sh
# preempt-agent pre-removal script, shared by the .deb (prerm) and the .rpm
# (%preun).
#   deb: $1 = remove | upgrade <new-version> | deconfigure | failed-upgrade <old-version>
#   rpm: $1 = number of instances left after this one: 0 = erase, >= 1 = upgrade
# On upgrade the service is neither stopped nor disabled: the new package's
# post-install restarts it if it was running.
set -e

UNIT=preempt-agent.service
LIBDIR=/usr/lib/preempt-agent

remove_bytecode() {
    find "$LIBDIR" -depth -type d -name __pycache__ -exec rm -rf {} + 2>/dev/null || true
}

case "$1" in
    remove | 0)
        if command -v systemctl >/dev/null 2>&1; then
            if [ -d /run/systemd/system ]; then
                systemctl stop "$UNIT" || true
            fi
            # Disable while the unit file is still there.
            systemctl disable "$UNIT" >/dev/null 2>&1 || true
        fi
        remove_bytecode
        ;;
    upgrade | failed-upgrade | deconfigure)
        # dpkg replaces the files next; bytecode of modules dropped by the new
        # version would be left behind. The new postinst compiles again.
        remove_bytecode
        ;;
    *)
        # rpm upgrade (the new %post already ran and compiled): nothing to do.
        ;;
esac

exit 0
