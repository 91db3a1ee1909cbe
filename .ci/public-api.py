#!/usr/bin/env python3
"""The public API of the `pgdbm` crate, one item per line, for `public-api.txt`.

Usage: python3 .ci/public-api.py            # rewrite public-api.txt
       python3 .ci/public-api.py --check    # fail, with a diff, when it differs

It reads rustdoc's JSON output of the facade (`pgdbm`) and of `pgdbm-core`, whose items the facade
re-exports: rustdoc JSON lists a re-export of another crate's item only by reference, so each
re-exported item is looked up in pgdbm-core's JSON by its path. Rustdoc JSON is unstable; stable
rustdoc writes it with RUSTC_BOOTSTRAP=1 (no nightly toolchain needed). Every public path a user
can name is listed with its kind, and every public field, variant, method and trait
implementation with a compact signature, so a change to the surface is a visible diff.
"""

import difflib
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SNAPSHOT = os.path.join(ROOT, "public-api.txt")


def rustdoc_json(package, crate):
    env = dict(os.environ, RUSTC_BOOTSTRAP="1")
    env.pop("RUSTDOCFLAGS", None)
    subprocess.run(
        ["cargo", "rustdoc", "-q", "-p", package, "--lib", "--",
         "-Z", "unstable-options", "--output-format", "json"],
        cwd=ROOT, env=env, check=True)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    with open(os.path.join(target, "doc", crate + ".json")) as f:
        return json.load(f)


class Crate:
    def __init__(self, doc):
        self.doc = doc
        self.index = doc["index"]
        self.by_path = {}
        for id_, p in doc["paths"].items():
            if p["crate_id"] == 0:
                self.by_path[tuple(p["path"])] = id_

    def item(self, id_):
        return self.index.get(str(id_))


def ty(t):
    """A type as source would write it (close enough for a diff)."""
    if t is None:
        return "()"
    if isinstance(t, str):
        return t
    (kind, v), = t.items()
    if kind == "resolved_path":
        return v["path"].split("::")[-1] + args(v.get("args"))
    if kind == "generic":
        return v
    if kind == "primitive":
        return v
    if kind == "borrowed_ref":
        lt = (v["lifetime"] + " ") if v.get("lifetime") else ""
        return "&" + lt + ("mut " if v["is_mutable"] else "") + ty(v["type"])
    if kind == "raw_pointer":
        return ("*mut " if v["is_mutable"] else "*const ") + ty(v["type"])
    if kind == "tuple":
        return "(" + ", ".join(ty(x) for x in v) + ("," if len(v) == 1 else "") + ")"
    if kind == "slice":
        return "[" + ty(v) + "]"
    if kind == "array":
        return "[" + ty(v["type"]) + "; " + v["len"] + "]"
    if kind == "impl_trait":
        return "impl " + " + ".join(bound(b) for b in v)
    if kind == "dyn_trait":
        parts = [poly(p) for p in v["traits"]]
        if v.get("lifetime"):
            parts.append(v["lifetime"])
        return "dyn " + " + ".join(parts)
    if kind == "qualified_path":
        trait = v.get("trait")
        self_ = ty(v["self_type"])
        if trait:
            return "<" + self_ + " as " + trait["path"].split("::")[-1] + ">::" + v["name"]
        return self_ + "::" + v["name"]
    if kind == "function_pointer":
        return "fn(" + ", ".join(ty(p[1]) for p in v["sig"]["inputs"]) + ")" + ret(v["sig"].get("output"))
    return kind


def args(a):
    if not a:
        return ""
    if "angle_bracketed" in a:
        ab = a["angle_bracketed"]
        out = []
        for x in ab.get("args", []):
            (k, val), = x.items()
            out.append(ty(val) if k == "type" else (val if isinstance(val, str) else str(val)))
        for c in ab.get("constraints", []):
            binding = c.get("binding", {})
            if "equality" in binding:
                out.append(c["name"] + " = " + ty(binding["equality"].get("type")))
            else:
                out.append(c["name"] + ": " + " + ".join(bound(b) for b in binding.get("constraint", [])))
        return "<" + ", ".join(out) + ">" if out else ""
    if "parenthesized" in a:
        p = a["parenthesized"]
        return "(" + ", ".join(ty(x) for x in p["inputs"]) + ")" + ret(p.get("output"))
    return ""


def poly(p):
    return p["trait"]["path"].split("::")[-1] + args(p["trait"].get("args"))


def bound(b):
    if "trait_bound" in b:
        tb = b["trait_bound"]
        prefix = "?" if tb.get("modifier") == "maybe" else ""
        return prefix + tb["trait"]["path"].split("::")[-1] + args(tb["trait"].get("args"))
    if "outlives" in b:
        return b["outlives"]
    return "use<..>"


def ret(o):
    return (" -> " + ty(o)) if o else ""


def generics(g):
    params = []
    for p in g.get("params", []):
        kind = p["kind"]
        if "lifetime" in kind:
            params.append(p["name"])
        elif "type" in kind:
            if kind["type"].get("is_synthetic"):
                continue
            b = kind["type"].get("bounds", [])
            params.append(p["name"] + (": " + " + ".join(bound(x) for x in b) if b else ""))
        elif "const" in kind:
            params.append("const " + p["name"] + ": " + ty(kind["const"]["type"]))
    return "<" + ", ".join(params) + ">" if params else ""


def signature(name, f):
    sig = f["sig"]
    head = f.get("header", {})
    quals = ("const " if head.get("is_const") else "") + ("async " if head.get("is_async") else "") + ("unsafe " if head.get("is_unsafe") else "")
    inputs = []
    for pname, ptype in sig["inputs"]:
        if pname == "self":
            inputs.append(ty(ptype).replace("Self", "self") if ty(ptype) != "Self" else "self")
        else:
            inputs.append(pname + ": " + ty(ptype))
    return quals + "fn " + name + generics(f["generics"]) + "(" + ", ".join(inputs) + ")" + ret(sig.get("output"))


class Lister:
    def __init__(self, facade, core):
        self.facade, self.core = facade, core
        self.lines = []

    def resolve(self, crate, id_):
        """(crate, item) for an item id of `crate`, following a reference into pgdbm-core."""
        it = crate.item(id_)
        if it is not None:
            return crate, it
        p = crate.doc["paths"].get(str(id_))
        if p is None:
            return None, None
        if crate is self.facade and tuple(p["path"]) in self.core.by_path:
            core_id = self.core.by_path[tuple(p["path"])]
            return self.core, self.core.item(core_id)
        return None, {"name": p["path"][-1], "external": p}

    def module(self, crate, mod_item, prefix):
        for id_ in mod_item["inner"]["module"]["items"]:
            it = crate.item(id_)
            if it is None or it.get("visibility") != "public":
                continue
            if it["attrs"] and any("doc(hidden)" in str(a) for a in it["attrs"]):
                continue
            self.entry(crate, it, prefix)

    def entry(self, crate, it, prefix, name=None):
        kind, inner = next(iter(it["inner"].items()))
        if kind == "use":
            use = inner
            if use.get("id") is None:
                self.lines.append("pub use " + prefix + "::" + use["name"] + " (" + use["source"] + ")")
                return
            c, target = self.resolve(crate, use["id"])
            if target is None:
                return
            if "external" in target:
                p = target["external"]
                kinds = {"proc_attribute": "attribute macro", "macro": "macro", "proc_derive": "derive macro"}
                self.lines.append("pub " + kinds.get(p["kind"], p["kind"]) + " " + prefix + "::" + use["name"])
                return
            if use.get("is_glob"):
                self.lines.append("pub use " + prefix + "::* (" + use["source"] + ")")
                return
            self.entry(c, target, prefix, use["name"])
            return
        name = name or it.get("name")
        path = prefix + "::" + name
        if kind == "module":
            self.lines.append("pub mod " + path)
            self.module(crate, it, path)
        elif kind == "struct":
            self.lines.append("pub struct " + path + generics(inner["generics"]) + self.nonexhaustive(it))
            k = inner["kind"]
            if "plain" in k:
                for f in k["plain"]["fields"]:
                    fi = crate.item(f)
                    if fi and fi.get("visibility") == "public":
                        self.lines.append("pub " + path + "::" + fi["name"] + ": " + ty(fi["inner"]["struct_field"]))
            self.impls(crate, inner["impls"], path)
        elif kind == "enum":
            self.lines.append("pub enum " + path + generics(inner["generics"]) + self.nonexhaustive(it))
            for v in inner["variants"]:
                vi = crate.item(v)
                self.lines.append("pub " + path + "::" + vi["name"] + self.variant(crate, vi))
            self.impls(crate, inner["impls"], path)
        elif kind == "function":
            self.lines.append("pub " + signature(path, inner))
        elif kind == "trait":
            self.lines.append("pub trait " + path + generics(inner["generics"]))
            for m in inner["items"]:
                mi = crate.item(m)
                if mi and "function" in mi["inner"]:
                    self.lines.append("pub " + signature(path + "::" + mi["name"], mi["inner"]["function"]))
        elif kind == "constant":
            self.lines.append("pub const " + path + ": " + ty(inner["type"]))
        elif kind == "static":
            self.lines.append("pub static " + path + ": " + ty(inner["type"]))
        elif kind == "type_alias":
            self.lines.append("pub type " + path + generics(inner["generics"]) + " = " + ty(inner["type"]))
        else:
            self.lines.append("pub " + kind + " " + path)

    def nonexhaustive(self, it):
        return " #[non_exhaustive]" if any("non_exhaustive" in str(a) for a in it.get("attrs", [])) else ""

    def variant(self, crate, vi):
        k = vi["inner"]["variant"]["kind"]
        if "tuple" in k:
            fields = [crate.item(f) for f in k["tuple"] if f is not None]
            return "(" + ", ".join(ty(f["inner"]["struct_field"]) for f in fields if f) + ")"
        if "struct" in k:
            fields = [crate.item(f) for f in k["struct"]["fields"]]
            return " { " + ", ".join(f["name"] + ": " + ty(f["inner"]["struct_field"]) for f in fields if f) + " }"
        return ""

    def impls(self, crate, impl_ids, path):
        traits = []
        for i in impl_ids:
            im = crate.item(i)
            if im is None:
                continue
            imp = im["inner"]["impl"]
            if imp.get("is_synthetic") or imp.get("blanket_impl"):
                continue
            if imp.get("trait"):
                trait = imp["trait"]["path"].split("::")[-1]
                if trait == "StructuralPartialEq":
                    continue
                for_type = ty(imp["for"])
                # The impls an item lists include those of other types that name it.
                target = path if for_type.split("<")[0] == path.split("::")[-1] else for_type
                traits.append("impl" + generics(imp["generics"]) + " " + trait + args(imp["trait"].get("args")) + " for " + target)
                continue
            for m in imp["items"]:
                mi = crate.item(m)
                if not mi or mi.get("visibility") != "public":
                    continue
                if any("doc(hidden)" in str(a) for a in mi.get("attrs", [])):
                    continue
                if "function" in mi["inner"]:
                    self.lines.append("pub " + signature(path + "::" + mi["name"], mi["inner"]["function"]))
                elif "assoc_const" in mi["inner"]:
                    self.lines.append("pub const " + path + "::" + mi["name"])
        self.lines.extend(sorted(set(traits)))


def main():
    facade = Crate(rustdoc_json("pgdbm", "pgdbm"))
    core = Crate(rustdoc_json("pgdbm-core", "pgdbm_core"))
    lister = Lister(facade, core)
    root = facade.item(facade.doc["root"])
    lister.module(facade, root, "pgdbm")
    text = "\n".join(lister.lines) + "\n"
    if "--check" in sys.argv:
        with open(SNAPSHOT) as f:
            committed = f.read()
        if committed != text:
            sys.stdout.writelines(difflib.unified_diff(
                committed.splitlines(True), text.splitlines(True), "public-api.txt (committed)", "public-api.txt (now)"))
            print("\nThe public API changed: if that is intended, run `python3 .ci/public-api.py` and commit public-api.txt.")
            sys.exit(1)
        print("public API unchanged (%d lines)" % len(lister.lines))
        return
    with open(SNAPSHOT, "w") as f:
        f.write(text)
    print("wrote %s (%d lines)" % (SNAPSHOT, len(lister.lines)))


if __name__ == "__main__":
    main()
