"""The kopf operator: each WhatsAppSession becomes a StatefulSet running one session pod.

Lives in operator/ (a folder, never a package: a package named `operator` would shadow the
standard library's module)."""
