# rpm %postun. rpm has no purge: an erase keeps /var/lib/indaba, the secrets, an edited
# config.toml (as config.toml.rpmsave) and the indaba user; docs/OPERATIONS.md says how to
# delete them by hand.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
exit 0
