"""A JSON schema for the InferenceService CRD, derived from the kserve SDK's model classes.

The cluster's CRD OpenAPI schema cannot be fetched here, so we derive a faithful subset from the
classes the kserve Python SDK generates from that same OpenAPI spec (`kserve.models.*`, which
reference `kubernetes.client.models.*` for pod fields): every object lists its properties by their
JSON names, forbids unknown ones (so a typo such as `minReplica` fails), types its scalars, and
marks a field required where the SDK's setter refuses None. The result is vendored in
`manifests/crds/inferenceservice-v1beta1.schema.json`; tests check the file matches this generator,
so it is refreshed (`python -m fer_model.release.crd_schema > FILE`) when kserve is upgraded.
"""

from __future__ import annotations

import inspect
import json
import logging
import re
import sys
from typing import Any

logger = logging.getLogger(__name__)

SCHEMA_FILE = "manifests/crds/inferenceservice-v1beta1.schema.json"

_SCALARS: dict[str, dict[str, Any]] = {
    "str": {"type": "string"},
    "int": {"type": "integer"},
    "float": {"type": "number"},
    "bool": {"type": "boolean"},
    "datetime": {"type": "string"},
    "date": {"type": "string"},
    "object": {},
    # Kubernetes quantities are int-or-string ("500m", "1Gi", 2).
    "ResourceQuantity": {"type": ["string", "integer", "number"]},
    "V1beta1MetricQuantity": {"type": ["string", "integer", "number"]},
    # Knative and apimachinery types the SDK names but serialises as strings.
    "KnativeURL": {"type": "string"},
    "V1Time": {"type": "string"},
}
_LIST = re.compile(r"^list\[(.+)\]$")
_DICT = re.compile(r"^dict\((\w+), (.+)\)$")


_K8S_ALIAS = re.compile(r"^K8sIoApi[A-Z][a-z]+(V\d+(?:alpha\d+|beta\d+)?[A-Z]\w+)$")


def _model_class(name: str) -> type | None:
    """The SDK class for an OpenAPI type name; None when neither SDK has it."""
    from fer_model.serving._kserve import import_kserve

    import_kserve()
    import kserve.models
    import kubernetes.client.models

    # kserve names some pod types by their full Go path (K8sIoApiAppsV1DeploymentStrategy); the
    # kubernetes client calls the same type V1DeploymentStrategy.
    candidates = [name]
    if m := _K8S_ALIAS.match(name):
        candidates.append(m.group(1))
    for candidate in candidates:
        for module in (kserve.models, kubernetes.client.models):
            cls = getattr(module, candidate, None)
            if cls is not None:
                return cls
    return None


def _required(cls: type, attr: str) -> bool:
    prop = getattr(cls, attr, None)
    if not isinstance(prop, property) or prop.fset is None:
        return False
    return "must not be `None`" in inspect.getsource(prop.fset)


def _type_schema(type_name: str, defs: dict[str, Any]) -> dict[str, Any]:
    if type_name in _SCALARS:
        return dict(_SCALARS[type_name])
    if m := _LIST.match(type_name):
        return {"type": "array", "items": _type_schema(m.group(1), defs)}
    if m := _DICT.match(type_name):
        return {"type": "object", "additionalProperties": _type_schema(m.group(2), defs)}
    if type_name not in defs:
        defs[type_name] = {}  # placeholder first: the SDK's types are recursive (e.g. JSONSchemaProps)
        cls = _model_class(type_name)
        if cls is None:
            # Neither SDK defines it (kserve newer than the kubernetes client): accept any object
            # there rather than invent fields, and say so in the schema.
            logger.warning("no SDK class for %s; its fields are not checked", type_name)
            defs[type_name] = {"description": f"{type_name}: no SDK class, not checked"}
            return {"$ref": f"#/$defs/{type_name}"}
        properties = {cls.attribute_map[attr]: _type_schema(t, defs) for attr, t in sorted(cls.openapi_types.items())}
        required = sorted(cls.attribute_map[a] for a in cls.openapi_types if _required(cls, a))
        schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
        if required:
            schema["required"] = required
        defs[type_name] = schema
    return {"$ref": f"#/$defs/{type_name}"}


def build_schema() -> dict[str, Any]:
    """The JSON schema (draft 2020-12) of a `serving.kserve.io/v1beta1` InferenceService."""
    defs: dict[str, Any] = {}
    root = _type_schema("V1beta1InferenceService", defs)
    top = defs["V1beta1InferenceService"]
    # Pin what the SDK only types as strings: the group/version and kind this schema describes.
    top["properties"]["apiVersion"] = {"const": "serving.kserve.io/v1beta1"}
    top["properties"]["kind"] = {"const": "InferenceService"}
    top["required"] = sorted({*top.get("required", []), "apiVersion", "kind", "metadata", "spec"})
    # canaryTrafficPercent is a percentage; the CRD bounds it, the SDK does not say so.
    defs["V1beta1PredictorSpec"]["properties"]["canaryTrafficPercent"] = {
        "type": "integer",
        "minimum": 0,
        "maximum": 100,
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "InferenceService (serving.kserve.io/v1beta1), derived from the kserve SDK model classes",
        **root,
        "$defs": dict(sorted(defs.items())),
    }


def main() -> int:
    """Print the schema as JSON (redirect into SCHEMA_FILE to refresh the vendored copy)."""
    json.dump(build_schema(), sys.stdout, indent=1, sort_keys=False)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
