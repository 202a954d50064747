"""Where a WhatsAppSession lives in the Kubernetes API, and the labels that tie a location's
objects together (crds/whatsappsessions.yaml is the same contract in YAML; a test keeps
the two equal)."""

from __future__ import annotations

GROUP = "whatsapp-sessions.io"
VERSION = "v1alpha1"
PLURAL = "whatsappsessions"
KIND = "WhatsAppSession"

# Every session pod (and its StatefulSet and Service) carries both labels.
APP_LABEL = "app.kubernetes.io/name"
APP = "whatsapp-session"
LOCATION_LABEL = f"{GROUP}/location"

# The operator's record of the fleet rollout of a namespace (crds/whatsappsessionrollouts.yaml):
# one object, named ROLLOUT_NAME, or one per operator shard (rollout_name), each rolling that
# shard's locations.
ROLLOUT_KIND = "WhatsAppSessionRollout"
ROLLOUT_PLURAL = "whatsappsessionrollouts"
ROLLOUT_NAME = "whatsapp-sessions"


def rollout_name(shard: str | None) -> str:
    """The rollout record of an operator shard (`shard-1`), or of the unsharded operator."""
    return f"{ROLLOUT_NAME}-{shard}" if shard else ROLLOUT_NAME
