"""The deploy files against what the built programs accept.

Parses deploy/compose.yaml, deploy/compose.host.yaml, the Dockerfile and
every manifest under deploy/k8s, and checks that each command they give a
Samotop container is one of our programs, that each SAMOTOP_* variable
they set is a configuration key the programs know (asked from the
programs' --print-config, never from a list kept here), that
`docker-compose config` accepts the compose files, that the Kubernetes
objects are well formed (kubectl is not available here: apiVersion, kind,
required fields, selectors matching labels, probes, ports and volumes that
exist), and that docs/operations.md's variable table is the one the
programs print. No process is left running; nothing is bound.
"""
import os
import re
import shlex
import shutil
import subprocess
import sys
import unittest

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import samotop_deploy as sd  # noqa: E402
from samotop_deploy import read  # noqa: E402

DEPLOY = os.path.join(sd.SRC, "deploy")
K8S = os.path.join(DEPLOY, "k8s")

# Programs of the image besides ours: Debian's redis-server (for samotopd
# and the Redis service) and its client.
IMAGE_EXTRA = {"redis-server", "redis-cli", "samotop-health"}
# Containers of other images and the programs they may be given.
THIRD_PARTY = {
    "redis": {"sh", "redis-server", "redis-sentinel", "redis-cli"},
    "haproxy": {"haproxy"},
}
# Variables read by compose itself (interpolation), never by a program.
COMPOSE_ONLY = {"SAMOTOP_IMAGE", "SAMOTOP_REDIS_IMAGE"}
# Read by the programs outside the key table.
NOT_KEYS = {"SAMOTOP_CONFIG"}

# kind -> (apiVersion, required paths)
KINDS = {
    "Namespace": ("v1", []),
    "ConfigMap": ("v1", ["data"]),
    "Service": ("v1", ["spec.ports"]),
    "Deployment": ("apps/v1", ["spec.selector.matchLabels",
                               "spec.template.metadata.labels",
                               "spec.template.spec.containers"]),
    "StatefulSet": ("apps/v1", ["spec.serviceName",
                                "spec.selector.matchLabels",
                                "spec.template.metadata.labels",
                                "spec.template.spec.containers"]),
    "HorizontalPodAutoscaler": ("autoscaling/v2",
                                ["spec.scaleTargetRef", "spec.minReplicas",
                                 "spec.maxReplicas", "spec.metrics"]),
}
DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def get(obj, path):
    for part in path.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj


def load(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


class Known:
    keys = None
    envs = None
    programs = None

    @classmethod
    def setup(cls):
        if cls.keys is None:
            cls.keys = sd.config_keys()
            cls.envs = {v[0] for v in cls.keys.values()}
            cls.programs = set(sd.executables()) | IMAGE_EXTRA


def is_ours(image):
    return image is not None and re.search(r"(^|[/:{-])samotop(:|$|\})",
                                           str(image)) is not None


class TestCompose(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        Known.setup()
        cls.base = load(os.path.join(DEPLOY, "compose.yaml"))[0]
        cls.host = load(os.path.join(DEPLOY, "compose.host.yaml"))[0]
        cls.over = load(os.path.join(DEPLOY, "compose.override.yaml"))[0]

    def services(self):
        for f, doc in (("compose.yaml", self.base),
                       ("compose.host.yaml", self.host),
                       ("compose.override.yaml", self.over)):
            for name, svc in doc["services"].items():
                yield f, name, svc

    def test_every_service_has_an_actor_or_redis(self):
        want = {"redis", "bus", "listener", "auth", "guard", "mailbox",
                "queue", "relay"}
        self.assertEqual(set(self.base["services"]), want)
        self.assertLessEqual(set(self.host["services"]), want)
        self.assertLessEqual(set(self.over["services"]), want)
        for name in want - {"redis"}:
            cmd = self.base["services"][name]["command"]
            self.assertEqual(cmd, "samotop-%s" % name,
                             "%s: got command %r" % (name, cmd))

    def test_commands_are_our_programs(self):
        for f, name, svc in self.services():
            image = svc.get("image") or self.base["services"][name]["image"]
            cmd = svc.get("command")
            if cmd is None:
                continue
            argv = shlex.split(cmd) if isinstance(cmd, str) else cmd
            self.assertTrue(is_ours(image), "%s: %s: image %r" % (f, name, image))
            self.assertTrue(argv[0] in Known.programs,
                          "%s: %s: command %r is not a program of the image"
                          % (f, name, argv[0]))

    def test_variables_are_config_keys(self):
        for f, name, svc in self.services():
            env = svc.get("environment") or {}
            self.assertIsInstance(env, dict, "%s: %s" % (f, name))
            for var in env:
                self.assertTrue(var.startswith("SAMOTOP_"),
                                "%s: %s sets %s" % (f, name, var))
                self.assertTrue(var in Known.envs | NOT_KEYS,
                              "%s: %s sets %s, which no program reads"
                              % (f, name, var))

    def test_interpolated_variables_are_known(self):
        for fname in ("compose.yaml", "compose.host.yaml",
                      "compose.override.yaml"):
            text = read(os.path.join(DEPLOY, fname))
            for var in re.findall(r"\$\{(SAMOTOP_[A-Z0-9_]+)", text):
                self.assertTrue(var in Known.envs | COMPOSE_ONLY,
                              "%s: ${%s} is no configuration variable"
                              % (fname, var))

    def test_durability_and_volumes(self):
        redis = self.base["services"]["redis"]["command"]
        # DESIGN.md: a 250 is a promise that the message is on disk.
        self.assertIn("--appendonly yes", redis)
        self.assertIn("--appendfsync always", redis)
        mounts = {name: [v.split(":")[1] for v in svc.get("volumes", [])]
                  for name, svc in self.base["services"].items()}
        self.assertIn("/var/lib/samotop/redis", mounts["redis"])
        self.assertIn("/var/lib/samotop/mail", mounts["mailbox"])
        self.assertIn("/var/lib/samotop/tls", mounts["listener"])
        for svc in ("auth", "guard", "queue", "relay"):
            # Scaled with --scale: nothing that ties a copy to a place.
            s = self.base["services"][svc]
            self.assertFalse(s.get("ports") or s.get("container_name")
                             or s.get("volumes"), svc)

    def test_published_ports_only_in_the_default_override(self):
        for name, svc in self.base["services"].items():
            self.assertFalse(svc.get("ports"), name)
        ports = {name: sorted(int(p.split(":")[-1]) for p in svc["ports"])
                 for name, svc in self.over["services"].items()}
        self.assertEqual(ports, {"listener": [25, 465, 587],
                                 "mailbox": [143, 993]})

    def test_host_override_uses_loopback_only(self):
        for name, svc in self.host["services"].items():
            self.assertEqual(svc.get("network_mode"), "host", name)
            self.assertFalse(svc.get("ports"), name)
            self.assertFalse(svc.get("networks"), name)
        text = read(os.path.join(DEPLOY, "compose.host.yaml"))
        for addr in re.findall(r"(?:tcp://)?(\d+\.\d+\.\d+\.\d+):\d+", text):
            self.assertTrue(addr.startswith("127."), addr)
        self.assertNotIn("2024", re.findall(r":(\d+)", text))

    def test_docker_compose_config(self):
        exe = shutil.which("docker-compose")
        self.assertIsNotNone(exe, "docker-compose is missing: deploy/deps --test")
        env = sd.clean_env()
        # [] is what `docker compose up` in deploy/ reads: compose.yaml and
        # compose.override.yaml.
        for files in ([], ["compose.yaml"],
                      ["compose.yaml", "compose.host.yaml"]):
            args = [exe]
            for f in files:
                args += ["-f", os.path.join(DEPLOY, f)]
            r = subprocess.run(args + ["config"], capture_output=True,
                               text=True, env=env, timeout=60, cwd=DEPLOY)
            self.assertEqual(r.returncode, 0, "%s: %s" % (files, r.stderr))
            merged = yaml.safe_load(r.stdout)
            self.assertEqual(set(merged["services"]),
                             set(self.base["services"]))
            if not files:
                self.assertEqual(
                    sorted(p["target"] for p in
                           merged["services"]["listener"]["ports"]),
                    [25, 465, 587])
            if "compose.host.yaml" in files:
                for name, svc in merged["services"].items():
                    self.assertEqual(svc["network_mode"], "host", name)
                    env_ = svc.get("environment", {})
                    for k, v in env_.items():
                        if k.startswith("SAMOTOP_BUS_") or k.startswith(
                                "SAMOTOP_LISTEN_") or k == "SAMOTOP_REDIS_HOST":
                            self.assertRegex(str(v), r"^(tcp://)?127\.",
                                             "%s %s" % (name, k))


class TestDockerfile(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        Known.setup()
        cls.text = read(os.path.join(sd.SRC, "Dockerfile"))

    def test_env_are_config_keys(self):
        block = re.search(r"^ENV (.*?)(?<!\\)\n", self.text, re.S | re.M)
        self.assertIsNotNone(block)
        names = re.findall(r"(SAMOTOP_[A-Z0-9_]+)=", block.group(1))
        self.assertIn("SAMOTOP_LISTEN_MTA", names)
        for n in names:
            self.assertTrue(n in Known.envs, "Dockerfile ENV %s" % n)

    def test_standard_ports_non_root_healthcheck(self):
        for role, port in (("MTA", 25), ("MSA", 587), ("SMTPS", 465),
                           ("IMAP", 143), ("IMAPS", 993), ("LMTP", 24)):
            self.assertRegex(self.text, r"SAMOTOP_LISTEN_%s=0\.0\.0\.0:%d\b"
                             % (role, port))
        self.assertRegex(self.text, r"(?m)^USER samotop")
        self.assertRegex(self.text, r"(?m)^HEALTHCHECK .*")
        self.assertRegex(self.text, r"(?m)^FROM debian:bookworm-slim AS build")
        self.assertEqual(len(re.findall(r"(?m)^FROM ", self.text)), 2)

    def test_build_packages_are_deploy_deps(self):
        deps = read(os.path.join(DEPLOY, "deps"))
        want = set(re.search(r"(?ms)^build=\((.*?)\)", deps).group(1).split())
        stage = self.text.split("\nFROM ", 2)[1]
        m = re.search(r"apt-get install [^\n]*\\\n(.*?)>/dev/null", stage, re.S)
        self.assertIsNotNone(m, "no apt-get install in the build stage")
        got = set(m.group(1).replace("\\", " ").split())
        self.assertEqual(got, want, "the Dockerfile's build packages differ "
                         "from deploy/deps' build list")

    def test_dockerignore_keeps_build_output_out(self):
        lines = read(os.path.join(sd.SRC, ".dockerignore")).split()
        for want in ("build", ".git", "var"):
            self.assertIn(want, lines)


class TestKubernetes(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        Known.setup()
        kust = load(os.path.join(K8S, "kustomization.yaml"))[0]
        cls.kust = kust
        cls.docs = []
        for res in kust["resources"]:
            for d in load(os.path.join(K8S, res)):
                cls.docs.append((res, d))
        cls.by_kind = {}
        for res, d in cls.docs:
            cls.by_kind.setdefault(d.get("kind"), []).append(d)

    def named(self, kind):
        return {d["metadata"]["name"]: d for d in self.by_kind.get(kind, [])}

    def workloads(self):
        for kind in ("Deployment", "StatefulSet"):
            for d in self.by_kind.get(kind, []):
                yield d

    def test_kustomization_lists_every_file(self):
        self.assertEqual(self.kust["apiVersion"],
                         "kustomize.config.k8s.io/v1beta1")
        self.assertEqual(self.kust["kind"], "Kustomization")
        files = sorted(f for f in os.listdir(K8S) if f.endswith(".yaml")
                       and f != "kustomization.yaml")
        self.assertEqual(sorted(self.kust["resources"]), files)

    def test_objects_are_well_formed(self):
        seen = set()
        for res, d in self.docs:
            kind = d.get("kind")
            self.assertIn(kind, KINDS, "%s: kind %r" % (res, kind))
            api, required = KINDS[kind]
            self.assertEqual(d.get("apiVersion"), api, "%s: %s" % (res, kind))
            name = get(d, "metadata.name")
            self.assertTrue(name and DNS1123.match(name) and len(name) <= 63,
                            "%s: %s name %r" % (res, kind, name))
            self.assertNotIn((kind, name), seen, "%s: %s/%s twice"
                             % (res, kind, name))
            seen.add((kind, name))
            for path in required:
                self.assertIsNotNone(get(d, path), "%s: %s/%s lacks %s"
                                     % (res, kind, name, path))

    def test_selectors_match_labels(self):
        for d in self.workloads():
            sel = d["spec"]["selector"]["matchLabels"]
            labels = d["spec"]["template"]["metadata"]["labels"]
            for k, v in sel.items():
                self.assertEqual(labels.get(k), v, d["metadata"]["name"])
        pods = [d["spec"]["template"] for d in self.workloads()]
        for svc in self.by_kind["Service"]:
            sel = svc["spec"]["selector"]
            match = [p for p in pods
                     if all(p["metadata"]["labels"].get(k) == v
                            for k, v in sel.items())]
            self.assertTrue(match, "Service %s selects no pod"
                            % svc["metadata"]["name"])
            ports = {cp.get("name"): cp["containerPort"] for p in match
                     for c in p["spec"]["containers"]
                     for cp in c.get("ports", [])}
            for port in svc["spec"]["ports"]:
                tp = port.get("targetPort", port["port"])
                if isinstance(tp, str):
                    self.assertIn(tp, ports, "Service %s: targetPort %s"
                                  % (svc["metadata"]["name"], tp))
                else:
                    self.assertIn(tp, ports.values(), "Service %s: port %s"
                                  % (svc["metadata"]["name"], tp))

    def test_containers(self):
        cms = self.named("ConfigMap")
        services = self.named("Service")
        for d in self.workloads():
            name = d["metadata"]["name"]
            spec = d["spec"]["template"]["spec"]
            if d["kind"] == "StatefulSet":
                self.assertIn(d["spec"]["serviceName"], services, name)
            vols = {v["name"] for v in spec.get("volumes", [])}
            vols |= {t["metadata"]["name"]
                     for t in d["spec"].get("volumeClaimTemplates", [])}
            for v in spec.get("volumes", []):
                if "configMap" in v:
                    self.assertIn(v["configMap"]["name"], cms, name)
            for c in spec["containers"]:
                where = "%s/%s" % (name, c["name"])
                self.assertTrue(c.get("image"), where)
                ports = {p.get("name") for p in c.get("ports", [])}
                for p in c.get("ports", []):
                    if "name" in p:
                        self.assertLessEqual(len(p["name"]), 15, where)
                for probe in ("readinessProbe", "livenessProbe"):
                    self.assertIn(probe, c, where)
                    pr = c[probe]
                    how = [k for k in ("exec", "tcpSocket", "httpGet")
                           if k in pr]
                    self.assertEqual(len(how), 1, "%s %s" % (where, probe))
                    port = get(pr, how[0] + ".port")
                    if isinstance(port, str):
                        self.assertIn(port, ports, "%s %s" % (where, probe))
                    if how[0] == "exec":
                        prog = pr["exec"]["command"][0]
                        self.check_program(c["image"], prog, where)
                req = get(c, "resources.requests") or {}
                self.assertIn("cpu", req, where)
                self.assertIn("memory", req, where)
                for m in c.get("volumeMounts", []):
                    self.assertIn(m["name"], vols, where)
                for ef in c.get("envFrom", []):
                    self.assertIn(ef["configMapRef"]["name"], cms, where)
                    if is_ours(c["image"]):
                        for var in cms[ef["configMapRef"]["name"]]["data"]:
                            self.check_var(var, where)
                for e in c.get("env", []):
                    if is_ours(c["image"]):
                        self.check_var(e["name"], where)
                self.check_program(c["image"], (c.get("command") or [
                    "samotopd"])[0], where)

    def check_var(self, var, where):
        self.assertTrue(var in Known.envs | NOT_KEYS,
                      "%s sets %s, which no program reads" % (where, var))

    def check_program(self, image, prog, where):
        if is_ours(image):
            self.assertTrue(prog in Known.programs, "%s runs %s" % (where, prog))
            return
        base = image.split("/")[-1].split(":")[0]
        self.assertIn(base, THIRD_PARTY, "%s: image %s" % (where, image))
        self.assertIn(prog, THIRD_PARTY[base], "%s runs %s" % (where, prog))

    def test_the_shape_issue_6_asks_for(self):
        deps = self.named("Deployment")
        for actor in ("listener", "auth", "guard", "queue", "relay"):
            self.assertIn(actor, deps)
            self.assertEqual(deps[actor]["spec"]["template"]["spec"][
                "containers"][0]["command"], ["samotop-%s" % actor])
        sts = self.named("StatefulSet")
        self.assertTrue(sts["mailbox"]["spec"]["volumeClaimTemplates"])
        self.assertEqual(sts["bus"]["spec"]["replicas"], 2)
        hpa = {h["spec"]["scaleTargetRef"]["name"]
               for h in self.by_kind["HorizontalPodAutoscaler"]}
        self.assertEqual(hpa, {"listener", "relay"})
        for h in self.by_kind["HorizontalPodAutoscaler"]:
            self.assertIn(h["spec"]["scaleTargetRef"]["name"], deps)
        self.assertIn("redis-sentinel", sts)
        svc = self.named("Service")
        ports = {p["port"] for s in svc.values() for p in s["spec"]["ports"]}
        self.assertLessEqual({25, 587, 465, 143, 993, 5570, 5571, 6379}, ports)
        env = self.named("ConfigMap")["samotop-env"]["data"]
        # Two brokers side by side: every client and worker knows both.
        for var in ("SAMOTOP_BUS_CLIENTS", "SAMOTOP_BUS_WORKERS"):
            self.assertEqual(len(env[var].split(",")), 2, var)


class TestDocs(unittest.TestCase):
    def test_env_table_matches_programs(self):
        want = sd.env_table()
        got = sd.doc_table()
        self.assertIsNotNone(got, "docs/operations.md has no env-table markers")
        if got != want:
            import difflib
            diff = [l for l in difflib.unified_diff(
                got.splitlines(), want.splitlines(), "docs", "programs",
                lineterm="", n=0) if l[:1] in "+-"]
            self.fail("docs/operations.md's variable table differs from the "
                      "programs' --print-config; run SAMOTOP_BIN=... "
                      "tests/deploy/samotop_deploy.py --write:\n"
                      + "\n".join(diff))

    def test_readme_links_operations(self):
        readme = read(os.path.join(sd.SRC, "README.md"))
        self.assertTrue("docs/operations.md" in readme,
                        "README.md does not link docs/operations.md")


if __name__ == "__main__":
    unittest.main(verbosity=2)
