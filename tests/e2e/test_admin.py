"""samotop-admin's account verbs (domain, user, alias) against the Redis of
a running samotopd: every verb, every refusal with its exit status and
message, the keys exactly as schemas/redis.md lays them out, passwords
stored only as $scrypt$ strings (checked here with Python's own scrypt),
the password read from stdin or, on a terminal, asked twice without echo.

Exit statuses: 0 done, 1 refused, 2 usage.
"""
import base64
import hashlib
import os
import pty
import select
import socket
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import samotop_test as st  # noqa: E402

BASE = 18600
DEAD_PORT = BASE + 19  # nothing of the System listens there


class Redis:
    """Just enough RESP to read what samotop-admin wrote."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""

    def close(self):
        self.sock.close()

    def _line(self):
        while b"\r\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("redis closed the connection")
            self.buf += data
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("redis closed the connection")
            self.buf += data
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def _reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n).decode()
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._reply() for _ in range(n)]
        raise RuntimeError("bad reply %r" % line)

    def __call__(self, *args):
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        self.sock.sendall(out)
        return self._reply()

    def hgetall(self, key):
        flat = self("HGETALL", key)
        return dict(zip(flat[0::2], flat[1::2]))

    def keys(self, pattern):
        return sorted(self("KEYS", pattern))


def scrypt_matches(stored, password):
    """Checks a $scrypt$ln=N,r=R,p=P$salt$key string with hashlib."""
    parts = stored.split("$")
    assert parts[0] == "" and parts[1] == "scrypt" and len(parts) == 5, stored
    params = dict(kv.split("=") for kv in parts[2].split(","))

    def b64(s):
        return base64.b64decode(s + "=" * (-len(s) % 4), validate=True)

    salt, key = b64(parts[3]), b64(parts[4])
    got = hashlib.scrypt(password.encode(), salt=salt,
                         n=1 << int(params["ln"]), r=int(params["r"]),
                         p=int(params["p"]), maxmem=128 << 20,
                         dklen=len(key))
    return got == key


SYSTEM = None
REDIS = None


def setUpModule():
    global SYSTEM, REDIS
    SYSTEM = st.System(BASE).start()
    REDIS = Redis(BASE + 6)


def tearDownModule():
    REDIS.close()
    SYSTEM.stop()


class AdminTest(unittest.TestCase):
    """One samotopd for the module; each test uses domains of its own."""

    @property
    def sys(self):
        return SYSTEM

    @property
    def redis(self):
        return REDIS

    def admin(self, *args, input=None, env=None):
        e = dict(self.sys.env)
        if env:
            e.update(env)
        return subprocess.run([st.bin_path("samotop-admin")] + list(args),
                              env=e, capture_output=True, text=True,
                              input=input, timeout=60)

    def ok(self, *args, input=None):
        r = self.admin(*args, input=input)
        self.assertEqual(r.returncode, 0, "%s: %s%s" % (args, r.stdout,
                                                        r.stderr))
        return r

    def refused(self, status, message, *args, input=None):
        """Runs args, wants the exit status and message on stderr."""
        r = self.admin(*args, input=input)
        self.assertEqual(r.returncode, status, "%s: rc=%d\n%s%s" % (
            args, r.returncode, r.stdout, r.stderr))
        self.assertIn(message, r.stderr, args)
        self.assertEqual(r.stdout, "", args)
        return r

    def domain(self, name):
        self.ok("domain", "add", name)
        self.addCleanup(self.admin, "domain", "del", "--force", name)
        return name

    def user(self, address, password="secret"):
        self.ok("user", "add", address, input=password + "\n")


class Domains(AdminTest):
    def test_add_list_del(self):
        r = self.ok("domain", "add", "Dom1.TEST")
        self.assertEqual(r.stdout, "added domain dom1.test\n")
        self.assertEqual(self.redis("SISMEMBER", "samotop:domains",
                                    "dom1.test"), 1)
        h = self.redis.hgetall("samotop:{dom1.test}:domain")
        self.assertEqual(h["catchall"], "")
        self.assertEqual(h["disabled"], "0")
        self.assertLess(abs(int(h["created"]) - time.time()), 60)
        self.assertIn("dom1.test users=0 aliases=0\n",
                      self.ok("domain", "list").stdout)
        self.refused(1, "dom1.test is already a local domain",
                     "domain", "add", "dom1.test")
        r = self.ok("domain", "del", "dom1.test")
        self.assertEqual(r.stdout, "deleted domain dom1.test\n")
        self.assertEqual(self.redis.keys("samotop:{dom1.test}:*"), [])
        self.assertEqual(self.redis("SISMEMBER", "samotop:domains",
                                    "dom1.test"), 0)
        self.assertNotIn("dom1.test", self.ok("domain", "list").stdout)
        self.refused(1, "dom1.test is not a local domain",
                     "domain", "del", "dom1.test")

    def test_list_sorted_with_counts(self):
        self.domain("list-b.test")
        self.domain("list-a.test")
        self.user("u1@list-a.test")
        self.user("u2@list-a.test")
        self.ok("alias", "add", "al@list-a.test", "u1@list-a.test")
        self.ok("domain", "catchall", "list-a.test", "u2@list-a.test")
        lines = [l for l in self.ok("domain", "list").stdout.splitlines()
                 if l.startswith("list-")]
        self.assertEqual(lines, [
            "list-a.test users=2 aliases=1 catchall=u2@list-a.test",
            "list-b.test users=0 aliases=0"])

    def test_unicode_domain_kept_as_a_labels(self):
        """RFC 5890: "bücher.test" is stored, and found, as its A-labels,
        the form the guard looks up and the DNS knows."""
        r = self.ok("domain", "add", "B\u00fccher.test")
        self.addCleanup(self.admin, "domain", "del", "--force",
                        "xn--bcher-kva.test")
        self.assertEqual(r.stdout, "added domain xn--bcher-kva.test\n")
        self.assertEqual(self.redis("SISMEMBER", "samotop:domains",
                                    "xn--bcher-kva.test"), 1)
        self.refused(1, "xn--bcher-kva.test is already a local domain",
                     "domain", "add", "xn--bcher-kva.test")
        self.user("anna@b\u00fccher.test")
        self.assertEqual(self.redis("SISMEMBER",
                                    "samotop:{xn--bcher-kva.test}:users",
                                    "anna"), 1)
        self.refused(1, "non-ASCII local parts", "user", "add",
                     "\u00e4nna@xn--bcher-kva.test", input="pw\n")

    def test_bad_domains(self):
        for bad, why in [("exa mple.test", "is not a domain"),
                         ("[192.0.2.1]", "address literal"),
                         ("a@b.test", "is not a domain"),
                         ("a\u2603\uffff.test", "no valid IDNA domain name"),
                         ("lead-.test", "is not a domain"),
                         ("dot..test", "is not a domain"),
                         ("x" * 64 + ".test", "is not a domain")]:
            with self.subTest(bad=bad):
                self.refused(1, why, "domain", "add", bad)
        self.assertEqual(self.redis.keys("samotop:{*exa*"), [])

    def test_del_refused_while_used_then_force(self):
        d = self.domain("del.test")
        self.user("u@del.test")
        self.ok("alias", "add", "a@del.test", "u@del.test", "x@remote.test")
        self.refused(1, "del.test still has 1 user and 1 alias; --force "
                        "deletes them too", "domain", "del", d)
        self.assertEqual(len(self.redis.keys("samotop:{del.test}:*")), 5)
        r = self.ok("domain", "del", "--force", d)
        self.assertEqual(r.stdout,
                         "deleted domain del.test with 1 user and 1 alias\n")
        self.assertEqual(self.redis.keys("samotop:{del.test}:*"), [])
        self.assertEqual(self.redis("SISMEMBER", "samotop:domains", d), 0)
        # Only users, and the option after the domain.
        self.domain("del2.test")
        self.user("u@del2.test")
        self.refused(1, "still has 1 user and 0 aliases",
                     "domain", "del", "del2.test")
        self.ok("domain", "del", "del2.test", "--force")
        self.assertEqual(self.redis.keys("samotop:{del2.test}:*"), [])

    def test_catchall(self):
        d = self.domain("catch.test")
        self.user("boss@catch.test")
        r = self.ok("domain", "catchall", d, "Boss@Catch.TEST")
        self.assertEqual(r.stdout, "domain catch.test: catch-all "
                                   "boss@catch.test\n")
        self.assertEqual(self.redis("HGET", "samotop:{catch.test}:domain",
                                    "catchall"), "boss@catch.test")
        # A remote address keeps its local part as given.
        self.ok("domain", "catchall", d, "Someone@Remote.TEST")
        self.assertEqual(self.redis("HGET", "samotop:{catch.test}:domain",
                                    "catchall"), "Someone@remote.test")
        # An unknown local address is taken, with a warning.
        r = self.ok("domain", "catchall", d, "nobody@catch.test")
        self.assertIn("warning: nobody@catch.test is neither a user nor an "
                      "alias", r.stderr)
        r = self.ok("domain", "catchall", d, "--none")
        self.assertEqual(r.stdout, "domain catch.test: no catch-all\n")
        self.assertEqual(self.redis("HGET", "samotop:{catch.test}:domain",
                                    "catchall"), "")
        self.refused(2, "give either an ADDRESS or --none",
                     "domain", "catchall", d)
        self.refused(2, "give either an ADDRESS or --none",
                     "domain", "catchall", d, "a@b.test", "--none")
        self.refused(1, "nope.test is not a local domain",
                     "domain", "catchall", "nope.test", "a@b.test")
        self.refused(1, "a@@b is not an address: ",
                     "domain", "catchall", d, "a@@b")


class Users(AdminTest):
    def test_add_reads_stdin_and_stores_scrypt(self):
        self.domain("users.test")
        r = self.ok("user", "add", "Alice@Users.TEST",
                    input="correct horse\nsecond line\n")
        self.assertEqual(r.stdout, "added user alice@users.test\n")
        h = self.redis.hgetall("samotop:{users.test}:user:alice")
        self.assertEqual(sorted(h), ["created", "disabled", "pw"])
        self.assertEqual(h["disabled"], "0")
        self.assertLess(abs(int(h["created"]) - time.time()), 60)
        pw = h["pw"]
        self.assertTrue(pw.startswith("$scrypt$ln=15,r=8,p=1$"), pw)
        self.assertNotIn("correct horse", pw)
        self.assertTrue(scrypt_matches(pw, "correct horse"))
        self.assertFalse(scrypt_matches(pw, "correct horse\n"))
        self.assertFalse(scrypt_matches(pw, "second line"))
        self.assertEqual(self.redis("SMEMBERS", "samotop:{users.test}:users"),
                         ["alice"])
        # Neither the password nor the hash is printed.
        for text in (r.stdout, r.stderr):
            self.assertNotIn("correct horse", text)
            self.assertNotIn("scrypt", text)

    def test_crlf_and_no_final_newline(self):
        self.domain("crlf.test")
        self.ok("user", "add", "a@crlf.test", input="pw one\r\n")
        self.assertTrue(scrypt_matches(self.redis(
            "HGET", "samotop:{crlf.test}:user:a", "pw"), "pw one"))
        self.ok("user", "add", "b@crlf.test", input="pw two")
        self.assertTrue(scrypt_matches(self.redis(
            "HGET", "samotop:{crlf.test}:user:b", "pw"), "pw two"))

    def test_two_users_same_password_differ(self):
        self.domain("salt.test")
        self.user("a@salt.test", "same")
        self.user("b@salt.test", "same")
        a = self.redis("HGET", "samotop:{salt.test}:user:a", "pw")
        b = self.redis("HGET", "samotop:{salt.test}:user:b", "pw")
        self.assertNotEqual(a, b)

    def test_add_refusals(self):
        self.domain("refuse.test")
        self.user("taken@refuse.test")
        self.ok("alias", "add", "list@refuse.test", "taken@refuse.test")
        cases = [
            ("other.test is not a local domain", "x@other.test", "pw\n"),
            ("user taken@refuse.test exists already", "Taken@refuse.test",
             "pw\n"),
            ("list@refuse.test is an alias; a user of that name would "
             "shadow it", "list@refuse.test", "pw\n"),
            ("no-at-sign is not an address: ", "no-at-sign", "pw\n"),
            ("a..b@refuse.test is not an address: ", "a..b@refuse.test",
             "pw\n"),
            ("is not an address of ours: a quoted local part",
             '"a b"@refuse.test', "pw\n"),
            ("is not an address of ours: an address literal",
             "a@[192.0.2.1]", "pw\n"),
            ("is not an address: ", "x" * 65 + "@refuse.test", "pw\n"),
            ("no password", "new@refuse.test", "\n"),
            ("no password", "new@refuse.test", ""),
            ("NUL byte", "new@refuse.test", "a\0b\n"),
            ("longer than 1024 bytes", "new@refuse.test", "x" * 1025 + "\n"),
        ]
        for message, address, password in cases:
            with self.subTest(address=address, password=password[:8]):
                self.refused(1, message, "user", "add", address,
                             input=password)
        self.assertEqual(self.redis("SMEMBERS", "samotop:{refuse.test}:users"),
                         ["taken"])
        self.assertEqual(self.redis("EXISTS", "samotop:{refuse.test}:user:new"),
                         0)
        # 1024 bytes is still a password.
        self.ok("user", "add", "long@refuse.test", input="y" * 1024 + "\n")
        self.assertTrue(scrypt_matches(self.redis(
            "HGET", "samotop:{refuse.test}:user:long", "pw"), "y" * 1024))

    def test_passwd(self):
        self.domain("pw.test")
        self.user("p@pw.test", "old one")
        before = self.redis("HGET", "samotop:{pw.test}:user:p", "pw")
        r = self.ok("user", "passwd", "P@pw.test", input="new one\n")
        self.assertEqual(r.stdout, "new password for p@pw.test\n")
        after = self.redis("HGET", "samotop:{pw.test}:user:p", "pw")
        self.assertNotEqual(before, after)
        self.assertTrue(scrypt_matches(after, "new one"))
        self.assertFalse(scrypt_matches(after, "old one"))
        self.assertEqual(self.redis("HGET", "samotop:{pw.test}:user:p",
                                    "disabled"), "0")
        self.refused(1, "no such user q@pw.test", "user", "passwd",
                     "q@pw.test", input="x\n")
        self.refused(1, "no password", "user", "passwd", "p@pw.test",
                     input="\n")
        self.assertEqual(self.redis("HGET", "samotop:{pw.test}:user:p", "pw"),
                         after)
        self.refused(1, "zz.test is not a local domain", "user", "passwd",
                     "p@zz.test", input="x\n")
        self.ok("alias", "add", "al@pw.test", "p@pw.test")
        self.refused(1, "no such user al@pw.test (it is an alias)",
                     "user", "passwd", "al@pw.test", input="x\n")

    def test_del(self):
        self.domain("del-u.test")
        self.user("a@del-u.test")
        self.user("b@del-u.test")
        r = self.ok("user", "del", "A@del-u.test")
        self.assertEqual(r.stdout, "deleted user a@del-u.test\n")
        self.assertEqual(self.redis("EXISTS", "samotop:{del-u.test}:user:a"),
                         0)
        self.assertEqual(self.redis("SMEMBERS", "samotop:{del-u.test}:users"),
                         ["b"])
        self.refused(1, "no such user a@del-u.test", "user", "del",
                     "a@del-u.test")
        self.refused(1, "nope.test is not a local domain", "user", "del",
                     "a@nope.test")

    def test_del_keeps_usage(self):
        # The mail stays in the store, so its count stays too: the address
        # added again is not under its quota by what is already there.
        self.domain("del-q.test")
        self.user("a@del-q.test")
        self.redis("HSET", "samotop:{del-q.test}:usage", "a", "5000")
        self.ok("user", "del", "a@del-q.test")
        self.assertEqual(self.redis("HGET", "samotop:{del-q.test}:usage",
                                    "a"), "5000")
        self.user("a@del-q.test")
        r = self.ok("user", "show", "a@del-q.test")
        self.assertIn("used: 5000", r.stdout)

    def test_disable_enable_and_list(self):
        self.domain("list-u.test")
        self.domain("list-v.test")
        for a in ("zed@list-u.test", "amy@list-u.test", "bob@list-v.test"):
            self.user(a)
        r = self.ok("user", "disable", "Zed@list-u.test")
        self.assertEqual(r.stdout, "disabled user zed@list-u.test\n")
        self.assertEqual(self.redis("HGET", "samotop:{list-u.test}:user:zed",
                                    "disabled"), "1")
        self.assertEqual(self.ok("user", "list", "list-u.test").stdout,
                         "amy@list-u.test\nzed@list-u.test disabled\n")
        everyone = self.ok("user", "list").stdout.splitlines()
        self.assertEqual([l for l in everyone if "@list-" in l],
                         ["amy@list-u.test", "zed@list-u.test disabled",
                          "bob@list-v.test"])
        r = self.ok("user", "enable", "zed@list-u.test")
        self.assertEqual(r.stdout, "enabled user zed@list-u.test\n")
        self.assertEqual(self.redis("HGET", "samotop:{list-u.test}:user:zed",
                                    "disabled"), "0")
        self.assertEqual(self.ok("user", "list", "LIST-U.test").stdout,
                         "amy@list-u.test\nzed@list-u.test\n")
        self.refused(1, "no such user x@list-u.test", "user", "disable",
                     "x@list-u.test")
        self.refused(1, "no such user x@list-u.test", "user", "enable",
                     "x@list-u.test")
        self.refused(1, "nope.test is not a local domain", "user", "list",
                     "nope.test")
        self.domain("empty-u.test")
        self.assertEqual(self.ok("user", "list", "empty-u.test").stdout, "")

    def test_concurrent_adds_one_wins(self):
        self.domain("race.test")
        procs = [subprocess.Popen(
            [st.bin_path("samotop-admin"), "user", "add", "same@race.test"],
            env=self.sys.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True) for _ in range(6)]
        results = [p.communicate("pw%d\n" % i, timeout=60)
                   for i, p in enumerate(procs)]
        codes = sorted(p.returncode for p in procs)
        self.assertEqual(codes, [0, 1, 1, 1, 1, 1], results)
        for p, (out, err) in zip(procs, results):
            if p.returncode:
                self.assertIn("user same@race.test exists already", err)
        self.assertEqual(self.redis("SMEMBERS", "samotop:{race.test}:users"),
                         ["same"])

    def tty_add(self, address, answers):
        """Runs user add on a pseudo-terminal, typing each answer after its
        prompt; returns (status, everything the terminal showed)."""
        prompts = [b"New password for %s: " % address.encode(), b"Again: "]
        pid, fd = pty.fork()
        if pid == 0:
            os.execve(st.bin_path("samotop-admin"),
                      ["samotop-admin", "user", "add", address],
                      self.sys.env)
        shown = b""
        pos = 0  # where the next prompt is looked for
        pending = list(answers)
        deadline = time.time() + 30
        while time.time() < deadline:
            r, _, _ = select.select([fd], [], [], 0.5)
            if not r:
                continue
            try:
                data = os.read(fd, 4096)
            except OSError:
                break  # EIO: the child has gone
            if not data:
                break
            shown += data
            k = len(answers) - len(pending)
            if pending and shown.find(prompts[k], pos) >= 0:
                pos = shown.find(prompts[k], pos) + len(prompts[k])
                os.write(fd, pending.pop(0).encode() + b"\n")
        _, status = os.waitpid(pid, 0)
        os.close(fd)
        return os.waitstatus_to_exitcode(status), shown.decode(errors="replace")

    def test_terminal_asks_twice_without_echo(self):
        self.domain("tty.test")
        code, shown = self.tty_add("t@tty.test", ["tty secret", "tty secret"])
        self.assertEqual(code, 0, shown)
        self.assertIn("New password for t@tty.test:", shown)
        self.assertIn("Again:", shown)
        self.assertNotIn("tty secret", shown)
        self.assertIn("added user t@tty.test", shown)
        self.assertTrue(scrypt_matches(self.redis(
            "HGET", "samotop:{tty.test}:user:t", "pw"), "tty secret"))

        code, shown = self.tty_add("u@tty.test", ["one", "two"])
        self.assertEqual(code, 1, shown)
        self.assertIn("the two passwords differ", shown)
        self.assertEqual(self.redis("EXISTS", "samotop:{tty.test}:user:u"), 0)

        code, shown = self.tty_add("u@tty.test", [""])
        self.assertEqual(code, 1, shown)
        self.assertIn("an empty password is refused", shown)


class Aliases(AdminTest):
    def test_add_grow_list_del(self):
        self.domain("al.test")
        self.user("amy@al.test")
        self.user("bob@al.test")
        r = self.ok("alias", "add", "Team@AL.test", "Amy@al.test",
                    "Ext@Remote.TEST")
        self.assertEqual(r.stdout, "alias team@al.test: added 2 targets, "
                                   "2 in all\n")
        self.assertEqual(r.stderr, "")
        self.assertEqual(sorted(self.redis("SMEMBERS",
                                           "samotop:{al.test}:alias:team")),
                         ["Ext@remote.test", "amy@al.test"])
        self.assertEqual(self.redis("SMEMBERS", "samotop:{al.test}:aliases"),
                         ["team"])
        # Adding to an alias adds targets; one already there is no new one.
        r = self.ok("alias", "add", "team@al.test", "bob@al.test",
                    "amy@al.test")
        self.assertEqual(r.stdout, "alias team@al.test: added 1 target, "
                                   "3 in all\n")
        self.ok("alias", "add", "info@al.test", "team@al.test")
        self.assertEqual(self.ok("alias", "list", "al.test").stdout,
                         "info@al.test -> team@al.test\n"
                         "team@al.test -> Ext@remote.test, amy@al.test, "
                         "bob@al.test\n")
        self.assertIn("team@al.test -> Ext@remote.test, amy@al.test, "
                      "bob@al.test\n", self.ok("alias", "list").stdout)
        # Remove some targets, then the rest.
        r = self.ok("alias", "del", "team@al.test", "AMY@al.test",
                    "Ext@remote.test")
        self.assertEqual(r.stdout, "alias team@al.test: removed 2 targets, "
                                   "1 left\n")
        self.assertEqual(self.redis("SMEMBERS",
                                    "samotop:{al.test}:alias:team"),
                         ["bob@al.test"])
        self.refused(1, "ext@remote.test is not a target of team@al.test",
                     "alias", "del", "team@al.test", "bob@al.test",
                     "ext@remote.test")
        self.assertEqual(self.redis("SMEMBERS",
                                    "samotop:{al.test}:alias:team"),
                         ["bob@al.test"])
        r = self.ok("alias", "del", "team@al.test", "bob@al.test")
        self.assertEqual(r.stdout, "deleted alias team@al.test\n")
        self.assertEqual(self.redis("EXISTS", "samotop:{al.test}:alias:team"),
                         0)
        self.assertEqual(self.redis("SMEMBERS", "samotop:{al.test}:aliases"),
                         ["info"])
        r = self.ok("alias", "del", "info@al.test")
        self.assertEqual(r.stdout, "deleted alias info@al.test\n")
        self.assertEqual(self.redis.keys("samotop:{al.test}:alias*"), [])
        self.assertEqual(self.ok("alias", "list", "al.test").stdout, "")

    def test_refusals(self):
        self.domain("alr.test")
        self.user("me@alr.test")
        self.ok("alias", "add", "grp@alr.test", "me@alr.test")
        self.refused(1, "me@alr.test is a user; an alias of that name "
                        "would shadow it", "alias", "add", "me@alr.test",
                     "x@remote.test")
        self.refused(1, "grp@alr.test cannot forward to itself",
                     "alias", "add", "grp@alr.test", "GRP@alr.test")
        self.refused(1, "far.test is not a local domain",
                     "alias", "add", "a@far.test", "x@remote.test")
        self.refused(1, "bad@@x is not an address: ",
                     "alias", "add", "new@alr.test", "ok@remote.test",
                     "bad@@x")
        self.assertEqual(self.redis("EXISTS", "samotop:{alr.test}:alias:new"),
                         0)
        self.refused(1, "no such alias none@alr.test",
                     "alias", "del", "none@alr.test")
        self.refused(1, "no such alias me@alr.test (it is a user)",
                     "alias", "del", "me@alr.test")
        self.refused(1, "far.test is not a local domain",
                     "alias", "list", "far.test")
        r = self.ok("alias", "add", "new@alr.test", "ghost@alr.test")
        self.assertIn("warning: ghost@alr.test is neither a user nor an "
                      "alias (yet)", r.stderr)

    def test_many_targets(self):
        self.domain("many.test")
        targets = ["t%03d@remote.test" % i for i in range(150)]
        r = self.ok("alias", "add", "all@many.test", *targets)
        self.assertEqual(r.stdout, "alias all@many.test: added 150 targets, "
                                   "150 in all\n")
        self.assertEqual(self.redis("SCARD", "samotop:{many.test}:alias:all"),
                         150)
        r = self.ok("alias", "del", "all@many.test", *targets[:100])
        self.assertEqual(r.stdout, "alias all@many.test: removed 100 targets, "
                                   "50 left\n")


class Usage(AdminTest):
    def test_usage_errors_are_2(self):
        for args in [[], ["nosuchverb"], ["domain"], ["domain", "frob"],
                     ["domain", "add"], ["domain", "add", "a.test", "b.test"],
                     ["domain", "add", "--force", "a.test"],
                     ["domain", "list", "extra"],
                     ["domain", "del", "--bogus", "a.test"],
                     ["user"], ["user", "add"], ["user", "list", "a", "b"],
                     ["alias", "add", "a@b.test"], ["alias", "del"],
                     ["alias", "list", "a", "b"]]:
            with self.subTest(args=args):
                r = self.admin(*args)
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertIn("usage:", r.stderr)
                self.assertEqual(r.stdout, "")

    def test_help_for_every_verb(self):
        subs = {"domain": ["add", "del", "list", "catchall"],
                "user": ["add", "passwd", "del", "list", "disable",
                         "enable"],
                "alias": ["add", "del", "list"]}
        top = self.ok("help").stdout
        for verb, names in subs.items():
            self.assertIn(verb, top)
            for how in (["help", verb], [verb, "--help"], [verb, "help"]):
                out = self.ok(*how).stdout
                for name in names:
                    self.assertIn("%s %s" % (verb, name), out)
            for name in names:
                out = self.ok(verb, name, "--help").stdout
                self.assertTrue(out.startswith(
                    "usage: samotop-admin %s %s" % (verb, name)), out)
                self.assertGreater(len(out.splitlines()), 2, out)
        self.assertIn("ping", self.ok("help", "ping").stdout)

    def test_redis_unreachable(self):
        for args in [["domain", "list"], ["domain", "add", "x.test"],
                     ["user", "list"], ["alias", "list"],
                     ["user", "del", "a@x.test"]]:
            with self.subTest(args=args):
                r = self.admin(*args, env={
                    "SAMOTOP_REDIS_PORT": str(DEAD_PORT)})
                self.assertEqual(r.returncode, 1, r.stderr)
                self.assertIn("cannot reach redis at 127.0.0.1:%d" %
                              DEAD_PORT, r.stderr)

    def test_existing_verbs_still_work(self):
        r = self.ok("ping", "guard", "auth")
        self.assertIn("guard", r.stdout)
        r = self.ok("call", "queue.ping")
        self.assertIn('"code"', r.stdout)


if __name__ == "__main__":
    unittest.main(verbosity=2)
