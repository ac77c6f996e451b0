# rpm %preun ($1: 0 on erase, 1 on upgrade): stop and disable before an erase only.
if [ "$1" -eq 0 ] && command -v systemctl >/dev/null 2>&1; then
    systemctl disable indaba.service >/dev/null 2>&1 || :
    if [ -d /run/systemd/system ]; then
        systemctl stop indaba.service >/dev/null 2>&1 || :
    fi
fi
exit 0
