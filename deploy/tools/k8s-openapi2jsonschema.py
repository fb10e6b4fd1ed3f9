#!/usr/bin/env python3
"""Turn the Kubernetes OpenAPI v2 document (api/openapi-spec/swagger.json of the
k8s.io/kubernetes Go module) into one JSON schema per kind, in the layout and
naming kubeconform expects (`<kind>-<group>-<version>.json`, e.g.
`deployment-apps-v1.json`, `service-v1.json`).

This is the same conversion as the upstream kubernetes-json-schema "standalone-strict"
sets (openapi2jsonschema --kubernetes --stand-alone --strict), written here because
those sets are only published on GitHub, which CI cannot reach:

* every file is self-contained: the definitions a kind reaches are copied into its
  own `definitions` section (local `#/definitions/...` refs, so recursive types stay finite);
* strict: objects with declared properties reject unknown fields
  (`additionalProperties: false`), which is how typos in a chart are caught;
* `int-or-string` fields accept both, and resource quantities accept strings and numbers
  (`cpu: 1`, `nvidia.com/gpu: 1`), as the API server does.

Usage: k8s-openapi2jsonschema.py SWAGGER_JSON OUT_DIR
"""
import json
import os
import sys

QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
REF_PREFIX = "#/definitions/"


def transform(node):
    """Apply the int-or-string and strict rules to a schema node, recursively."""
    if isinstance(node, list):
        return [transform(x) for x in node]
    if not isinstance(node, dict):
        return node
    if node.get("format") == "int-or-string":
        out = {"oneOf": [{"type": "string"}, {"type": "integer"}]}
        if "description" in node:
            out["description"] = node["description"]
        return out
    out = {k: transform(v) for k, v in node.items()}
    if "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


def refs(node, found):
    """Collect the names of the definitions a schema node refers to."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(REF_PREFIX):
            found.add(ref[len(REF_PREFIX):])
        for v in node.values():
            refs(v, found)
    elif isinstance(node, list):
        for v in node:
            refs(v, found)
    return found


def closure(name, definitions):
    """Every definition reachable from `name` (excluding itself unless it recurses)."""
    seen, todo = set(), list(refs(definitions[name], set()))
    while todo:
        dep = todo.pop()
        if dep in seen:
            continue
        seen.add(dep)
        todo.extend(refs(definitions[dep], set()) - seen)
    return seen


def file_name(gvk):
    group, version, kind = gvk.get("group", ""), gvk["version"], gvk["kind"]
    suffix = f"-{group.split('.')[0]}-{version}" if group else f"-{version}"
    return f"{kind.lower()}{suffix.lower()}.json"


def main(argv):
    if len(argv) != 3:
        sys.exit(__doc__)
    with open(argv[1], encoding="utf-8") as f:
        definitions = json.load(f)["definitions"]

    converted = {name: transform(schema) for name, schema in definitions.items()}
    converted[QUANTITY] = {
        "description": definitions[QUANTITY].get("description", ""),
        "oneOf": [{"type": "string"}, {"type": "number"}],
    }

    os.makedirs(argv[2], exist_ok=True)
    written = {}
    for name, schema in definitions.items():
        gvks = schema.get("x-kubernetes-group-version-kind", [])
        # Kinds listed under several groups (DeleteOptions, WatchEvent) are not objects one applies.
        if len(gvks) != 1:
            continue
        out = dict(converted[name])
        deps = closure(name, definitions)
        if deps:
            out["definitions"] = {dep: converted[dep] for dep in sorted(deps)}
        path = file_name(gvks[0])
        if path in written:
            sys.exit(f"two definitions map to {path}: {written[path]} and {name}")
        written[path] = name
        with open(os.path.join(argv[2], path), "w", encoding="utf-8") as f:
            json.dump(out, f, indent=1, sort_keys=True)
    print(f"wrote {len(written)} schemas to {argv[2]}")


if __name__ == "__main__":
    main(sys.argv)
