"""The router: the one service Rails calls. Same API as the seed, each call forwarded to the
location's session pod, found through a watch of the Kubernetes API.

Lives in router/ (a folder); the importable package is `whatsapp_router`."""
