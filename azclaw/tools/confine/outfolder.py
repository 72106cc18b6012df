"""The output folder as model code sees it, and what comes back of it.

In the call's own mount namespace the launcher mounts a tmpfs limited in
bytes and inodes, and over the output folder an overlay: the lower layer is
the real folder, the upper layer lives in that tmpfs. The code reads all that
was there; all it writes (its private HOME and TMPDIR too, mounted from the
same tmpfs) counts against one quota, and a write past it fails with ENOSPC.
No watcher races the code: the file system refuses. The tmpfs is then
unmounted from the namespace (the overlay keeps it), so the code cannot
reach the upper layer by name.

After the call the launcher copies the upper layer back into the real folder
(Landlock-confined to those two folders, never following a link, a file at a
time through a temporary name) and never copies a setuid or setgid bit.

As root, the lower layer is an idmapped mount in which the output folder's
owner is ``SANDBOX_UID``: the code runs as that uid, which no account has, and
still owns the output; what it wrote comes back owned by root. The folders
it must read and cannot reach as that uid (the source folders, a Python
under /root, and /root on the way to it) are mounted read-only and idmapped
the same way: what it may read there is then Landlock's decision alone.

The launcher imports this module: standard library ``os``/``stat`` only.
"""

from __future__ import annotations

import ctypes
import os
import stat

# The uid code runs as when azclaw runs as root: one no account and no other process has. Not nobody
# (65534): any process running as nobody could open /proc/<pid>/root of the code and, through its
# idmapped view, read root's files and write the output.
SANDBOX_UID = 2_147_400_000
_OWN_INODES = 6  # the tmpfs's own folders: its root, upper, work, work/work (the overlay's), home, lower
MAX_DEPTH = 200  # folders deeper than this are not copied back (the copy recurses; code may nest thousands)
_PRIVILEGED = stat.S_ISUID | stat.S_ISGID
_CLONE_NEWNS, _CLONE_NEWUSER = 0x00020000, 0x10000000
_MS_NOSUID, _MS_NODEV, _MS_BIND, _MS_REC, _MS_PRIVATE = 0x2, 0x4, 0x1000, 0x4000, 1 << 18
_MNT_DETACH = 2
_SYS = {"x86_64": (428, 429, 442), "aarch64": (428, 429, 442)}  # open_tree, move_mount, mount_setattr
_OPEN_TREE_CLONE, _AT_RECURSIVE, _AT_EMPTY_PATH = 1, 0x8000, 0x1000
_MOVE_MOUNT_F_EMPTY_PATH, _MOUNT_ATTR_IDMAP = 4, 0x00100000
_MOUNT_ATTR_RDONLY, _MOUNT_ATTR_NOSUID, _MOUNT_ATTR_NODEV = 0x1, 0x2, 0x4
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class View:
    """The mounted view of one call: descriptors of the upper layer and of
    the real output folder, the uid the code runs as (None: unchanged)."""

    def __init__(self, upper_fd: int, real_fd: int, uid, limits: tuple[int, int], note: str = ""):
        self.upper_fd, self.real_fd, self.uid, self.limits, self.note = upper_fd, real_fd, uid, limits, note


def _libc():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def _mount(source, target, fstype, flags: int, data=None) -> None:
    enc = (lambda v: v.encode() if isinstance(v, str) else v)
    _check(_libc().mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)),
           f"mount {fstype or 'bind'} on {target}")


def _own_mount_namespace() -> bool:
    """Enter a new mount namespace whose mounts never reach the host's;
    returns True when a user namespace had to be made for it (no capability
    in our own)."""
    libc, userns = _libc(), False
    if libc.unshare(ctypes.c_int(_CLONE_NEWNS)) != 0:
        uid, gid = os.geteuid(), os.getegid()
        _check(libc.unshare(ctypes.c_int(_CLONE_NEWNS | _CLONE_NEWUSER)), "unshare(mount, user)")
        for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
            with open(f"/proc/self/{name}", "w", encoding="ascii") as fh:
                fh.write(text)
        userns = True
    _mount("none", "/", None, _MS_REC | _MS_PRIVATE)
    return userns


def _idmap_userns(disk_uid: int, disk_gid: int, uid: int) -> int:
    """An open user namespace in which ``disk_uid``/``disk_gid`` are ``uid``."""
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # holds the namespace open until the maps are written and it is opened
        os.close(ready_r)
        os.close(go_w)
        ok = _libc().unshare(ctypes.c_int(_CLONE_NEWUSER)) == 0
        os.write(ready_w, b"1" if ok else b"0")
        os.read(go_r, 1)
        os._exit(0)
    os.close(ready_w)
    os.close(go_r)
    try:
        if os.read(ready_r, 1) != b"1":
            raise OSError(1, "cannot make a user namespace for the idmapped output")
        for name, text in (("uid_map", f"{disk_uid} {uid} 1"), ("setgroups", "deny"),
                           ("gid_map", f"{disk_gid} {uid} 1")):
            with open(f"/proc/{pid}/{name}", "w", encoding="ascii") as fh:
                fh.write(text)
        return os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.write(go_w, b"x")
        os.close(go_w)
        os.close(ready_r)
        os.waitpid(pid, 0)


def _idmapped_copy(source: str, target: str, userns: int, readonly: bool = False) -> None:
    """Mount at ``target`` a copy of ``source`` (with the mounts beneath it
    where each can be idmapped, else without them) idmapped by ``userns``."""
    machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(os.uname().machine.lower(), os.uname().machine.lower())
    if machine not in _SYS:
        raise OSError(38, f"no idmapped mounts on {machine}")
    open_tree, move_mount, mount_setattr = _SYS[machine]
    libc = _libc()
    flags = _MOUNT_ATTR_IDMAP | (_MOUNT_ATTR_RDONLY | _MOUNT_ATTR_NOSUID | _MOUNT_ATTR_NODEV if readonly else 0)
    for recursive in (_AT_RECURSIVE, 0):
        tree = _check(libc.syscall(ctypes.c_long(open_tree), ctypes.c_int(-100), source.encode(),
                                   ctypes.c_uint(_OPEN_TREE_CLONE | os.O_CLOEXEC | recursive)), f"open_tree {source}")
        try:
            attr = (ctypes.c_uint64 * 4)(flags, 0, 0, userns)
            if libc.syscall(ctypes.c_long(mount_setattr), ctypes.c_int(tree), b"",
                            ctypes.c_uint(_AT_EMPTY_PATH | recursive), attr, ctypes.c_size_t(32)) != 0:
                err = ctypes.get_errno()
                if recursive:
                    continue  # a mount beneath that cannot be idmapped: without the mounts beneath
                raise OSError(err, f"idmapping {source}: {os.strerror(err)}")
            _check(libc.syscall(ctypes.c_long(move_mount), ctypes.c_int(tree), b"", ctypes.c_int(-100),
                                target.encode(), ctypes.c_uint(_MOVE_MOUNT_F_EMPTY_PATH)), f"move_mount {target}")
            return
        finally:
            os.close(tree)


def _closed_to(path: str, uid: int, seen: dict) -> str | None:
    """The first folder on the way to ``path`` (itself included) that ``uid``
    may not pass (no search right for it), or None. ``seen``: folder ->
    passable (True), closed (False) or not a folder (None), shared between
    calls."""
    parts = [p for p in path.split("/") if p]
    for n in range(1, len(parts) + 1):
        folder = "/" + "/".join(parts[:n])
        if folder not in seen:
            try:
                st = os.stat(folder)
            except OSError:
                st = None
            if st is None or not stat.S_ISDIR(st.st_mode):
                seen[folder] = None
            else:
                seen[folder] = bool(st.st_mode & stat.S_IXOTH or st.st_uid == uid and st.st_mode & stat.S_IXUSR
                                    or st.st_gid == uid and st.st_mode & stat.S_IXGRP)
        if seen[folder] is None:
            return None
        if seen[folder] is False:
            return folder
    return None


def _beneath(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def open_the_way(paths: list[str], sources: list[str], uid: int, userns: int) -> list[str]:
    """Mount read-only and idmapped (root's files become ``uid``'s) each
    source folder and each folder on the way to ``paths`` that ``uid``
    could not pass. Returns the folders mounted on."""
    seen: dict = {}
    wanted = [f for f in (_closed_to(p, uid, seen) for p in paths) if f] + [s for s in sources if os.path.isdir(s)]
    chosen: list[str] = []
    for folder in sorted(set(wanted), key=len):
        if folder != "/" and not any(_beneath(folder, c) for c in chosen):
            chosen.append(folder)
    done: list[str] = []
    try:
        for folder in chosen:
            _idmapped_copy(folder, folder, userns, readonly=True)
            done.append(folder)
    except OSError:
        for folder in reversed(done):
            _libc().umount2(folder.encode(), ctypes.c_int(_MNT_DETACH))
        raise
    return done


def setup(output: str, staging: str, homes: list[str], quota_bytes: int, quota_files: int, uid=None,
          reach: list[str] = (), sources: list[str] = ()) -> View:
    """Mount the limited view of ``output`` (and of the private ``homes``)
    in a new mount namespace. ``uid``: the uid the code will run as, when
    the launcher is root (None: the code keeps ours); ``reach``, ``sources``:
    what it must then still read. Raises OSError, after undoing what it
    mounted (RuntimeError when it cannot)."""
    userns = _own_mount_namespace()
    real_fd = os.open(output, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    mounted: list[str] = []
    note, idmap = "", None
    try:
        if uid is not None and not userns:
            try:
                idmap = _idmap_userns(0, 0, uid)
                mounted += open_the_way(reach, sources, uid, idmap)
            except OSError as exc:
                note, uid = f"the code runs as root without capabilities: no idmapped mounts here ({exc})", None
        else:
            uid = None
        _mount("tmpfs", staging, "tmpfs", _MS_NOSUID | _MS_NODEV,
               f"size={quota_bytes},nr_inodes={quota_files + _OWN_INODES},mode=0700")
        mounted.append(staging)
        for name in ("upper", "work", "home", "lower"):
            os.mkdir(f"{staging}/{name}", 0o700)
        lower = output
        if uid is not None and not any(_beneath(output, folder) for folder in mounted[:-1]):
            try:  # (beneath a folder mounted above, the output is idmapped already: a read-only lower is fine)
                _idmapped_output(output, f"{staging}/lower", uid, idmap)
                lower = f"{staging}/lower"
            except OSError as exc:
                for target in reversed(mounted[:-1]):  # the code stays root: undo the idmapped folders
                    _check(_libc().umount2(target.encode(), ctypes.c_int(_MNT_DETACH)), f"umount {target}")
                mounted = mounted[-1:]
                note, uid = f"the code runs as root without capabilities: no idmapped output here ({exc})", None
        owner = os.geteuid() if uid is None else uid
        group = os.getegid() if uid is None else uid
        mode = os.stat(output).st_mode & 0o1777
        for name, bits in (("upper", mode), ("home", 0o700)):
            os.chown(f"{staging}/{name}", owner, group)
            os.chmod(f"{staging}/{name}", bits)
        options = f"lowerdir={lower},upperdir={staging}/upper,workdir={staging}/work"
        options += ",userxattr" if userns else ",redirect_dir=nofollow,index=off,metacopy=off"
        _mount("overlay", output, "overlay", _MS_NOSUID | _MS_NODEV, options)
        mounted.append(output)
        for home in homes:
            _mount(f"{staging}/home", home, None, _MS_BIND)
            mounted.append(home)
        upper_fd = os.open(f"{staging}/upper", _DIR)
        _check(_libc().umount2(staging.encode(), ctypes.c_int(_MNT_DETACH)), f"umount {staging}")
        os.chdir(output)  # the overlay, not the folder under it
    except OSError:
        os.close(real_fd)
        for target in reversed(mounted):
            if _libc().umount2(target.encode(), ctypes.c_int(_MNT_DETACH)) != 0:
                raise RuntimeError(f"cannot undo the mount on {target}") from None
        raise
    finally:
        if idmap is not None:
            os.close(idmap)
    return View(upper_fd, real_fd, uid, (quota_bytes, quota_files), note)


def _idmapped_output(output: str, lower: str, uid: int, root_ns: int) -> None:
    """Mount at ``lower`` the output folder with its owner as ``uid``."""
    st = os.stat(output)
    userns = root_ns if (st.st_uid, st.st_gid) == (0, 0) else _idmap_userns(st.st_uid, st.st_gid, uid)
    try:
        _idmapped_copy(output, lower, userns)
    finally:
        if userns != root_ns:
            os.close(userns)


def usage(view: View) -> tuple[int, int, bool, bool]:
    """(bytes, files) the call used of its quota, and whether each is spent."""
    try:
        st = os.fstatvfs(view.upper_fd)
    except OSError:
        return 0, 0, False, False
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    files = max(st.f_files - st.f_ffree - _OWN_INODES, 0)
    margin = min(1 << 20, view.limits[0] // 50)
    return used, files, st.f_bavail * st.f_frsize < margin, st.f_ffree <= 1


class Copied:
    """What a copy back did (paths relative to the output folder)."""

    def __init__(self):
        self.files, self.bytes, self.removed = 0, 0, 0
        self.stripped: list[str] = []
        self.skipped: list[str] = []
        self.errors: list[str] = []


def copy_back(view: View) -> Copied:
    """Apply the upper layer to the real output folder."""
    done = Copied()
    _merge(view.upper_fd, view.real_fd, "", done, 0)
    return done


def _merge(src: int, dst: int, rel: str, done: Copied, depth: int) -> None:
    if depth > MAX_DEPTH:
        done.errors.append(f"{rel}: more than {MAX_DEPTH} folders deep, not copied back")
        return
    for name in os.listdir(src):
        path = f"{rel}/{name}" if rel else name
        try:
            st = os.stat(name, dir_fd=src, follow_symlinks=False)
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:  # a whiteout: the code removed it
                _remove(dst, name)
                done.removed += 1
            elif stat.S_ISDIR(st.st_mode):
                _merge_dir(src, dst, name, path, st, done, depth)
            elif stat.S_ISREG(st.st_mode):
                _copy_file(src, dst, name, st)
                done.files += 1
                done.bytes += st.st_size
                if st.st_mode & _PRIVILEGED:
                    done.stripped.append(path)
            elif stat.S_ISLNK(st.st_mode):
                link = os.readlink(name, dir_fd=src)
                _replace(dst, name, lambda tmp, link=link: os.symlink(link, tmp, dir_fd=dst))
                done.files += 1
            else:  # a pipe or socket file: nothing to carry over
                done.skipped.append(path)
        except OSError as exc:
            done.errors.append(f"{path}: {exc.strerror or exc}")


def _opaque(fd: int) -> bool:
    """The code removed the folder and made a new one: what was there goes."""
    for attr in ("trusted.overlay.opaque", "user.overlay.opaque"):
        try:
            if os.getxattr(fd, attr) == b"y":
                return True
        except OSError:
            pass
    return False


def _merge_dir(src: int, dst: int, name: str, path: str, st, done: Copied, depth: int) -> None:
    sfd = os.open(name, _DIR, dir_fd=src)
    try:
        try:
            old = os.stat(name, dir_fd=dst, follow_symlinks=False)
        except FileNotFoundError:
            old = None
        if old is not None and (_opaque(sfd) or not stat.S_ISDIR(old.st_mode)):
            _remove(dst, name)
            old = None
        if old is None:
            os.mkdir(name, 0o700, dir_fd=dst)
        dfd = os.open(name, _DIR, dir_fd=dst)
        try:
            _merge(sfd, dfd, path, done, depth + 1)
            keep = old.st_mode & 0o7000 if old is not None else 0
            if old is None or (old.st_mode & 0o777) != (st.st_mode & 0o777):
                os.fchmod(dfd, keep | (st.st_mode & 0o777))  # last: a read-only folder is filled first
        finally:
            os.close(dfd)
    finally:
        os.close(sfd)


def _copy_file(src: int, dst: int, name: str, st) -> None:
    sfd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=src)
    try:
        def write(tmp: str) -> None:
            tfd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dst)
            try:
                while os.sendfile(tfd, sfd, None, 1 << 24) > 0:
                    pass
                os.fchmod(tfd, st.st_mode & 0o777)  # never S_ISUID, S_ISGID
                os.utime(tfd, ns=(st.st_atime_ns, st.st_mtime_ns))
            finally:
                os.close(tfd)
        _replace(dst, name, write)
    finally:
        os.close(sfd)


def _replace(dst: int, name: str, make) -> None:
    """Make the new entry under a temporary name, then rename it over
    ``name``: never written through a link, never half there."""
    tmp = f".azclaw-copy-{os.urandom(6).hex()}-{name[:100]}"  # (under bwrap every launcher is pid 2)
    _remove(dst, tmp)
    try:
        make(tmp)
        try:
            if stat.S_ISDIR(os.stat(name, dir_fd=dst, follow_symlinks=False).st_mode):
                _remove(dst, name)  # a folder the code replaced with a file
        except FileNotFoundError:
            pass
        os.rename(tmp, name, src_dir_fd=dst, dst_dir_fd=dst)
    except BaseException:
        _remove(dst, tmp)
        raise


def _remove(dir_fd: int, name: str) -> None:
    """Remove ``name`` (a folder with all in it), following no link."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=dir_fd)
        return
    fd = os.open(name, _DIR, dir_fd=dir_fd)
    try:
        try:
            os.fchmod(fd, 0o700)  # a read-only folder the code made
        except OSError:
            pass
        for child in os.listdir(fd):
            _remove(fd, child)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=dir_fd)


def strip_privileged(folder) -> list[str]:
    """Walk ``folder`` (no link followed) and clear setuid/setgid on every
    file; a file with other hard links (it may be a system program's) is
    unlinked instead. Returns the paths, relative to ``folder``."""
    found = []
    try:
        walk = os.fwalk(str(folder), follow_symlinks=False)
        for top, _dirs, files, dir_fd in walk:
            for name in files:
                try:
                    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                    if not stat.S_ISREG(st.st_mode) or not st.st_mode & _PRIVILEGED:
                        continue
                    fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
                    try:
                        now = os.fstat(fd)
                        if not stat.S_ISREG(now.st_mode) or not now.st_mode & _PRIVILEGED:
                            continue
                        if now.st_nlink > 1:
                            os.unlink(name, dir_fd=dir_fd)
                        else:  # the very file opened, not what the name leads to now
                            os.chmod(f"/proc/self/fd/{fd}", now.st_mode & 0o1777)
                    finally:
                        os.close(fd)
                    found.append(os.path.relpath(os.path.join(top, name), str(folder)))
                except OSError:
                    continue
    except (OSError, RecursionError):
        pass  # too deep to walk: the seccomp filter kept such files from being made, the copy back strips
    return found
