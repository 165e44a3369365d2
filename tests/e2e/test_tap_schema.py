"""samotop-tap against schemas/: everything the tap prints with --json
validates against the envelope schema and the schema of its type; the
filters keep only what they name; secrets never appear.
"""
import fnmatch
import glob
import json
import os
import sys
import time
import unittest

import jsonschema

sys.path.insert(0, os.path.dirname(__file__))
import samotop_test as st  # noqa: E402


def load_schemas():
    schemas = {}
    for path in glob.glob(os.path.join(st.SRC, "schemas", "*.json")):
        with open(path) as f:
            schemas[os.path.basename(path)] = json.load(f)
    return schemas


def body_schema_for(schemas, type_name):
    """The schema whose x-samotop-type names type_name: exact names first,
    then the longest matching glob (as schemas/gen_env_types.py orders)."""
    cands = [s for s in schemas.values() if "x-samotop-type" in s]
    cands.sort(key=lambda s: ("*" in s["x-samotop-type"],
                              -len(s["x-samotop-type"])))
    for s in cands:
        pat = s["x-samotop-type"]
        if pat == type_name or ("*" in pat and fnmatch.fnmatchcase(type_name, pat)):
            return s
    return None


class SchemaFiles(unittest.TestCase):
    def test_schemas_are_valid_and_examples_validate(self):
        schemas = load_schemas()
        self.assertIn("envelope.json", schemas)
        for name, s in schemas.items():
            jsonschema.Draft202012Validator.check_schema(s)
            self.assertIn("examples", s, name)
            for ex in s["examples"]:
                jsonschema.validate(ex, s)


class TapAgainstSchemas(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.sys = st.System(18200).start()

    @classmethod
    def tearDownClass(cls):
        cls.sys.stop()

    def run_traffic(self, trace):
        self.sys.admin("ping")  # every actor, request and reply
        self.sys.admin("call", "auth.verify", "mechanism=PLAIN",
                       "response=AGFsaWNlAGh1bnRlcjI=", "password=hunter2",
                       "client_ip=127.0.0.1", check=False)
        self.sys.admin("call", "guard.nosuchthing", check=False)
        self.sys.admin("call", "--trace", trace, "queue.ping", "echo=traced")

    def test_tap_output_validates_and_filters_work(self):
        trace = "feedfacecafe0001"
        taps = {
            "json": self.sys.tap("--json", "--seconds", "5"),
            "text": self.sys.tap("--seconds", "5"),
            "type": self.sys.tap("--json", "--type", "guard.*", "--seconds", "5"),
            "from": self.sys.tap("--json", "--from", "auth", "--seconds", "5"),
            "trace": self.sys.tap("--json", "--trace", trace, "--seconds", "5"),
        }
        time.sleep(1.0)  # subscriptions reach the broker
        self.run_traffic(trace)
        out = {k: p.communicate(timeout=30)[0] for k, p in taps.items()}
        for k, p in taps.items():
            self.assertEqual(p.returncode, 0, k)

        schemas = load_schemas()
        env_schema = schemas["envelope.json"]
        lines = [json.loads(l) for l in out["json"].splitlines()]
        types = [e["type"] for e in lines]
        # ping request and reply of all six actors, auth.verify and its
        # reply, the unknown type and its 502, and the traced ping.
        for a in st.ACTORS:
            self.assertIn(a + ".ping", types)
            self.assertIn(a + ".ping.reply", types)
        self.assertIn("auth.verify", types)
        self.assertIn("auth.verify.reply", types)
        self.assertIn("guard.nosuchthing.reply", types)
        for e in lines:
            jsonschema.validate(e, env_schema)
            s = body_schema_for(schemas, e["type"])
            if e["type"].endswith(".reply"):
                self.assertIsNotNone(s, e["type"])
            if s is not None:
                jsonschema.validate(e["body"], s)
        unknown = [e for e in lines if e["type"] == "guard.nosuchthing.reply"]
        self.assertEqual(unknown[0]["body"]["code"], 502)

        # Secrets: masked in both formats, never in clear anywhere.
        verify = [e for e in lines if e["type"] == "auth.verify"][0]
        self.assertEqual(verify["body"]["response"], "***")
        self.assertEqual(verify["body"]["password"], "***")
        self.assertEqual(verify["body"]["mechanism"], "PLAIN")
        for k, text in out.items():
            self.assertNotIn("hunter2", text, k)
            self.assertNotIn("AGFsaWNlAGh1bnRlcjI=", text, k)
        self.assertNotIn("hunter2", self.sys.logtext())
        self.assertIn("password=***", out["text"])

        # Readable output: one line per envelope.
        self.assertEqual(len(out["text"].splitlines()), len(lines))

        # Filters.
        typed = [json.loads(l) for l in out["type"].splitlines()]
        self.assertTrue(typed)
        self.assertTrue(all(fnmatch.fnmatchcase(e["type"], "guard.*") for e in typed))
        self.assertEqual(len(typed), sum(1 for t in types if t.startswith("guard.")))
        fromauth = [json.loads(l) for l in out["from"].splitlines()]
        self.assertTrue(fromauth)
        self.assertTrue(all(e["from"].startswith("auth/") for e in fromauth))
        traced = [json.loads(l) for l in out["trace"].splitlines()]
        self.assertEqual([e["type"] for e in traced], ["queue.ping", "queue.ping.reply"])
        self.assertTrue(all(e["trace"] == trace for e in traced))
        self.assertEqual(traced[1]["body"]["echo"], "traced")


if __name__ == "__main__":
    unittest.main(verbosity=2)
