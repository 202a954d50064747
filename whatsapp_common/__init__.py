"""What the three programs share: the contract between them (CRD coordinates, labels,
names, session states and phases, event types, the original API's answers and errors) and
the plumbing each of them uses (logs, settings, serving, middleware, validation).

session_pod, whatsapp_operator and whatsapp_router import this package and never each other.
"""
