"""Dropping root after binding: `[server] user` and `group`.

Port 53 is privileged, so a server started as root binds its sockets (and the metrics listener)
first and then becomes an ordinary user for the rest of its life, as BIND (`-u`), Unbound
(`username:`) and NSD do. Order matters (POSIX setuid, setgroups(2)): supplementary groups and
the group are changed while still root, the user last, because after setuid nothing can be
changed any more. Real, effective and saved IDs are all set, so the saved IDs cannot restore
root; the function then checks that regaining root really fails, rather than trusting it.

The alternative without ever being root is a capability: systemd's
`AmbientCapabilities=CAP_NET_BIND_SERVICE` (config/blokir.service) or
`setcap cap_net_bind_service=+ep` on the interpreter. Then `user` stays empty and this module
does nothing.
"""

from __future__ import annotations

# Loaded now, while the interpreter's files are surely readable: Python imports the idna codec
# on the first socket.getaddrinfo() of a str host (the upstream addresses, asyncio), which the
# workers do after the switch, and the new user may not be able to read the standard library
# (an interpreter under /root, say). The serving path does not otherwise import it any more.
import encodings.idna  # noqa: F401
import grp
import logging
import os
import pwd

log = logging.getLogger("blokir")


class PrivilegeError(Exception):
    """The configured user or group cannot be used, or the switch did not take."""


def _lookup_user(user: str) -> pwd.struct_passwd:
    try:
        if user.isdigit():
            return pwd.getpwuid(int(user))
        return pwd.getpwnam(user)
    except KeyError:
        raise PrivilegeError(
            f"[server] user: unknown user {user!r} (no such entry in the passwd database; "
            "create it, e.g. `useradd --system --no-create-home blokir`, or name another)"
        ) from None


def _lookup_group(group: str) -> int:
    try:
        if group.isdigit():
            return grp.getgrgid(int(group)).gr_gid
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise PrivilegeError(f"[server] group: unknown group {group!r}") from None


def drop_privileges(user: str, group: str | None = None) -> None:
    """Become `user` (name or numeric uid) and `group` (default: the user's primary group) when
    running as root; a no-op otherwise. Raises PrivilegeError with a message for the operator."""
    if os.geteuid() != 0:
        if user:
            log.info("not started as root: [server] user %r ignored", user)
        return
    if not user:
        log.warning(
            'running as root: set [server] user (e.g. "nobody") to drop privileges after '
            "binding, or start blokir unprivileged with CAP_NET_BIND_SERVICE"
        )
        return
    entry = _lookup_user(user)
    uid = entry.pw_uid
    gid = _lookup_group(group) if group else entry.pw_gid
    if uid == 0:
        raise PrivilegeError(
            f"[server] user: {user!r} is uid 0, so nothing would be dropped; "
            "name an unprivileged user or leave user empty"
        )
    try:
        os.setgroups([gid])  # no supplementary groups inherited from root (e.g. root's group 0)
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    except OSError as exc:
        raise PrivilegeError(
            f"cannot switch to user {entry.pw_name!r} (uid {uid}) / gid {gid}: {exc.strerror}"
        ) from exc
    _verify_dropped(uid, gid)
    log.info("dropped privileges to user %s (uid %d), gid %d", entry.pw_name, uid, gid)


def _verify_dropped(uid: int, gid: int) -> None:
    """Trust but verify: every ID is the target and root cannot be regained."""
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid):
        raise PrivilegeError(
            f"privilege drop incomplete: uids {os.getresuid()}, gids {os.getresgid()}"
        )
    if os.getgroups() not in ([gid], []):
        raise PrivilegeError(f"privilege drop incomplete: groups {os.getgroups()}")
    try:
        os.setuid(0)
    except PermissionError:
        return
    raise PrivilegeError("privilege drop failed: setuid(0) succeeded afterwards")
