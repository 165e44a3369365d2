"""A private Postfix instance on loopback, for interop tests.

Postfix(port, main_cf, files) runs Debian's Postfix with its own config
folder, queue, data folder and log file under a temporary folder (no
system service is touched), with smtpd on 127.0.0.1:port. main_cf is added
to the common main.cf (it may use {base}, the instance's folder); files
maps names under etc/ to their contents (e.g. a virtual(8) table). stop()
stops it and removes everything.

Used by test_interop_postfix.py (our relay delivering into Postfix) and
test_lmtp.py (Postfix delivering to our LMTP door).
"""
import glob
import os
import shutil
import smtplib
import subprocess
import tempfile
import time

MAIN_CF = """compatibility_level = 3.6
queue_directory = {base}/queue
data_directory = {base}/data
mail_owner = postfix
setgid_group = postdrop
relayhost =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_peername_lookup = no
disable_dns_lookups = yes
smtp_dns_support_level = disabled
maillog_file = {base}/log/maillog
maillog_file_prefixes = {base}
smtpd_relay_restrictions = reject_unauth_destination
alias_maps =
alias_database =
local_recipient_maps =
local_transport = error:5.1.1 local delivery disabled
"""

MASTER_CF = """127.0.0.1:{port} inet n - n - - smtpd
pickup     unix  n       -       n       60      1       pickup
cleanup    unix  n       -       n       -       0       cleanup
qmgr       unix  n       -       n       300     1       qmgr
rewrite    unix  -       -       n       -       -       trivial-rewrite
bounce     unix  -       -       n       -       0       bounce
defer      unix  -       -       n       -       0       bounce
trace      unix  -       -       n       -       0       bounce
verify     unix  -       -       n       -       1       verify
flush      unix  n       -       n       1000?   0       flush
proxymap   unix  -       -       n       -       -       proxymap
smtp       unix  -       -       n       -       -       smtp
lmtp       unix  -       -       n       -       -       lmtp
showq      unix  n       -       n       -       -       showq
error      unix  -       -       n       -       -       error
retry      unix  -       -       n       -       -       error
discard    unix  -       -       n       -       -       discard
virtual    unix  -       n       n       -       -       virtual
anvil      unix  -       -       n       -       1       anvil
scache     unix  -       -       n       -       1       scache
postlog    unix-dgram n  -       n       -       1       postlogd
"""


class Postfix:
    def __init__(self, port, main_cf="", files=None):
        self.port = port
        self.base = tempfile.mkdtemp(prefix="samotop-pfx-")
        os.chmod(self.base, 0o755)
        for d in ("etc", "queue", "data", "log", "mail"):
            os.makedirs(os.path.join(self.base, d))
        os.chmod(os.path.join(self.base, "queue"), 0o755)
        shutil.chown(os.path.join(self.base, "data"), "postfix", "postfix")
        shutil.chown(os.path.join(self.base, "mail"), 65534, 65534)
        self.etc = os.path.join(self.base, "etc")
        with open(os.path.join(self.etc, "main.cf"), "w") as f:
            f.write((MAIN_CF + main_cf).format(base=self.base))
        with open(os.path.join(self.etc, "master.cf"), "w") as f:
            f.write(MASTER_CF.format(port=port))
        for name, text in (files or {}).items():
            with open(os.path.join(self.etc, name), "w") as f:
                f.write(text)
        subprocess.run(["postfix", "-c", self.etc, "check"], check=True)
        subprocess.run(["postfix", "-c", self.etc, "start"], check=True,
                       capture_output=True)
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                smtplib.SMTP("127.0.0.1", port, timeout=2).quit()
                return
            except OSError:
                time.sleep(0.2)
        log = self.log()
        self.stop()  # nobody else will: the caller gets no instance
        raise AssertionError("postfix did not start: " + log)

    def log(self):
        try:
            with open(os.path.join(self.base, "log", "maillog")) as f:
                return f.read()
        except OSError:
            return ""

    def wait_log(self, pattern, timeout=30):
        """Waits for a line of the log holding pattern; returns it or ""."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            for line in self.log().splitlines():
                if pattern in line:
                    return line
            time.sleep(0.2)
        return ""

    def maildir(self, user, domain="remote.test"):
        """The files in new/ of a Maildir that Postfix's virtual(8) wrote
        under {base}/mail/<domain>/<user>/."""
        return sorted(glob.glob(os.path.join(self.base, "mail", domain,
                                             user, "new", "*")))

    def stop(self):
        subprocess.run(["postfix", "-c", self.etc, "stop"], capture_output=True)
        time.sleep(0.5)
        subprocess.run(["postfix", "-c", self.etc, "abort"], capture_output=True)
        shutil.rmtree(self.base, ignore_errors=True)
