"""drop_privileges in a forked child (the parent keeps its IDs): the switch, its order and its
verification, and the error messages. Needs root for the switching cases."""

from __future__ import annotations

import os
import pwd

import pytest

from resolver.privileges import PrivilegeError, drop_privileges

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")


def in_child(body: object) -> int:
    """Run `body()` in a forked child; its exit code (0 = the checks inside held)."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            body()  # type: ignore[operator]
            code = 0
        except BaseException as exc:  # report, never return into pytest in the child
            os.write(2, f"child failed: {exc!r}\n".encode())
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def nobody() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user 'nobody' on this machine")


@needs_root
def test_root_becomes_the_user_and_cannot_return() -> None:
    entry = nobody()

    def body() -> None:
        drop_privileges("nobody")
        assert os.getresuid() == (entry.pw_uid,) * 3
        assert os.getresgid() == (entry.pw_gid,) * 3
        assert os.getgroups() == [entry.pw_gid]
        with pytest.raises(PermissionError):
            os.setuid(0)
        with pytest.raises(PermissionError):
            os.seteuid(0)
        # Not root any more: a second call is a no-op, not an error.
        drop_privileges("nobody")

    assert in_child(body) == 0


@needs_root
def test_explicit_group_and_numeric_ids() -> None:
    entry = nobody()

    def body() -> None:
        drop_privileges(str(entry.pw_uid), str(entry.pw_gid))
        assert os.getuid() == entry.pw_uid and os.getgid() == entry.pw_gid

    assert in_child(body) == 0


@needs_root
def test_unknown_user_and_group_and_root_itself_are_errors() -> None:
    with pytest.raises(PrivilegeError, match="unknown user 'no-such-user-blokir'"):
        drop_privileges("no-such-user-blokir")
    with pytest.raises(PrivilegeError, match="unknown group 'no-such-group-blokir'"):
        drop_privileges("nobody", "no-such-group-blokir")
    with pytest.raises(PrivilegeError, match="uid 0"):
        drop_privileges("root")
    assert os.geteuid() == 0  # nothing changed in this process


@needs_root
def test_empty_user_as_root_warns_and_keeps_root(caplog: pytest.LogCaptureFixture) -> None:
    drop_privileges("")
    assert os.geteuid() == 0
    assert "running as root" in caplog.text
