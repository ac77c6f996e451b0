# rpm %postun ($1: 0 on erase, 1 on upgrade). rpm has no purge: an erase keeps
# /var/lib/indaba, the secrets, an edited config.toml (as config.toml.rpmsave) and the indaba
# user; docs/OPERATIONS.md says how to delete them by hand.
if [ "$1" -eq 0 ]; then
    # The package lists its files, not their directories (cargo-generate-rpm cannot), so
    # rpm leaves these behind empty.
    rmdir /usr/share/doc/indaba/packaging/nginx /usr/share/doc/indaba/packaging \
        /usr/share/doc/indaba/docs/screenshots /usr/share/doc/indaba/docs /usr/share/doc/indaba \
        /usr/lib/indaba 2>/dev/null || :
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
exit 0
