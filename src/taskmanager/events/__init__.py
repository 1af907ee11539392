"""Events: the public event schemas, the per-process hub, the dispatcher and ``/api/v1/ws``."""
