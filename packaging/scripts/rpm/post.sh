# rpm %post ($1: 1 on install, 2 on upgrade): user, data dir and secrets (shared with the deb),
# then the unit: enabled on first install, started or restarted when systemd is running.
/usr/lib/indaba/setup || exit 1

if command -v systemctl >/dev/null 2>&1; then
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload >/dev/null 2>&1 || :
    fi
    if [ "$1" -eq 1 ]; then
        systemctl enable indaba.service >/dev/null 2>&1 || :
    fi
    if [ -d /run/systemd/system ]; then
        if [ "$1" -eq 1 ]; then action=start; else action=try-restart; fi
        # A daemon that does not start (a bad config edit) must not fail the install.
        systemctl "$action" indaba.service >/dev/null 2>&1 ||
            echo "indaba: $action failed; see: journalctl -u indaba" >&2
    fi
fi
exit 0
