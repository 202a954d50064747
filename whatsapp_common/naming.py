"""Names of a location's Kubernetes objects, derived in this one place."""

from __future__ import annotations

import hashlib
import re

# The WhatsAppSession CRD's rule for spec.locationId (crds/whatsappsessions.yaml; a test
# keeps the two equal), for the services that must refuse what a cluster refuses.
LOCATION_ID_PATTERN = "^[A-Za-z0-9][A-Za-z0-9._-]*$"
LOCATION_ID_MAX = 63
_LOCATION_ID = re.compile(LOCATION_ID_PATTERN)

# The StatefulSet controller labels pods with `<name>-<10-char hash>` (at most 63 characters).
MAX_NAME = 52
_INVALID = re.compile(r"[^a-z0-9-]+")


def valid_location_id(location_id: str) -> bool:
    return len(location_id) <= LOCATION_ID_MAX and bool(_LOCATION_ID.match(location_id))


def session_name(location_id: str) -> str:
    """A DNS-1123 label for any location id: `wa-<id>`, plus a hash of the original id when
    the id had to be changed (case, characters) or shortened, so two ids never collide.

    The name of the location's StatefulSet and Service, and of the WhatsAppSession the router
    creates for it; a resource of any other name serves the location as well (one per
    location: the operator marks a second one Conflict)."""
    cleaned = _INVALID.sub("-", location_id.lower()).strip("-")
    name = f"wa-{cleaned}" if cleaned else "wa"
    if name == f"wa-{location_id}" and len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(location_id.encode()).hexdigest()[:8]
    return f"{name[: MAX_NAME - 9].rstrip('-')}-{digest}"


def location_label(location_id: str) -> str:
    """A label value for the location (label values: 63 chars, alphanumerics, `-_.`)."""
    return session_name(location_id)
