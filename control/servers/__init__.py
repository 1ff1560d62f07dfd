"""The control side's HTTP servers: the admin server (metrics, probes, debug) and the
controller's validating admission webhook."""
